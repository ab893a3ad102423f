// `vial serve` end to end: the real binary as a server process, real microVMs (TCG here), HTTP
// over its unix socket and over TCP. The fixture stops the server with SIGTERM and VialHomeTest
// then checks that no QEMU process, socket or overlay is left.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <fstream>
#include <random>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_harness.h"
#include "util/base64.h"

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace http = boost::beast::http;
using nlohmann::json;
using namespace std::chrono_literals;

namespace vial::test {
namespace {

struct Reply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  json js() const { return json::parse(body, nullptr, false); }
  std::string describe() const { return "HTTP " + std::to_string(status) + " " + body.substr(0, 400); }
};

// Where a request goes: the unix socket, or TCP with an optional token.
struct Target {
  fs::path socket;
  unsigned short port = 0;
  std::string token;
};

template <typename Stream>
Reply exchange(Stream& s, const std::string& method, const std::string& path, const std::string& body,
               const std::map<std::string, std::string>& headers,
               const std::function<void(const std::string&)>& on_chunk) {
  http::request<http::string_body> req{http::string_to_verb(method), path, 11};
  req.set(http::field::host, "vial");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  http::write(s, req);
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  // The parser keeps a reference to its chunk callback: it must outlive http::read.
  auto forward = [&](uint64_t, std::string_view data, boost::system::error_code&) {
    on_chunk(std::string(data));
    return data.size();
  };
  if (on_chunk) parser.on_chunk_body(forward);
  http::read(s, buffer, parser);
  Reply r;
  r.status = static_cast<int>(parser.get().result_int());
  r.body = parser.get().body();
  for (const auto& f : parser.get()) r.headers[std::string(f.name_string())] = std::string(f.value());
  return r;
}

Reply request(const Target& t, const std::string& method, const std::string& path, const std::string& body = {},
              std::map<std::string, std::string> headers = {},
              const std::function<void(const std::string&)>& on_chunk = {}) {
  asio::io_context io;
  if (!t.token.empty()) headers["Authorization"] = "Bearer " + t.token;
  if (t.port) {
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), t.port});
    return exchange(s, method, path, body, headers, on_chunk);
  }
  asio::local::stream_protocol::socket s(io);
  s.connect(asio::local::stream_protocol::endpoint(t.socket.string()));
  return exchange(s, method, path, body, headers, on_chunk);
}

Reply post_json(const Target& t, const std::string& path, const json& body, std::map<std::string, std::string> headers = {}) {
  headers["Content-Type"] = "application/json";
  return request(t, "POST", path, body.dump(), headers);
}


class ServerTest : public VialHomeTest {
 protected:
  void SetUp() override {
    VialHomeTest::SetUp();
    if (auto missing = missing_image("python")) GTEST_SKIP() << *missing;
  }
  void TearDown() override {
    stop_server();
    VialHomeTest::TearDown();
  }

  fs::path socket() const { return home() / "run" / "vial.sock"; }

  // Starts `vial serve` with `extra` flags and waits until /healthz answers.
  void start_server(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {vial_binary().string(), "serve", "--pool", "python=1", "--max-vms", "2",
                                     "--queue-timeout", "600"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    CliOptions o = options();
    o.deadline = 1800s;
    server_ = std::make_unique<CliProcess>(argv, o);
    const auto until = std::chrono::steady_clock::now() + 180s;
    while (std::chrono::steady_clock::now() < until) {
      if (!server_->pump_for(100ms)) break;
      std::error_code ec;
      if (!fs::exists(socket(), ec)) continue;
      try {
        if (request(unix_target(), "GET", "/healthz").status == 200) return;
      } catch (const std::exception&) {
      }
    }
    FAIL() << "vial serve did not come up: " << server_->finish().describe();
  }

  // SIGTERM, then the exit status; the server must exit 0 within a generous deadline.
  CliResult stop_server() {
    if (!server_) return {};
    server_->send_signal(SIGTERM);
    CliResult r = server_->finish();
    server_.reset();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_FALSE(fs::exists(socket())) << "socket left behind";
    return r;
  }

  Target unix_target() const { return {socket(), 0, {}}; }

  // The pool fills in the background after the server answers; waits for its python VM.
  void wait_for_warm_python() {
    const auto until = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < until) {
      server_->pump_for(100ms);
      auto health = json::parse(request(unix_target(), "GET", "/healthz").body, nullptr, false);
      if (health.is_object() && health["warm_pool"].value("python", 0) >= 1) return;
    }
    FAIL() << "the warm pool did not fill within 120 s";
  }

  std::unique_ptr<CliProcess> server_;
};

TEST_F(ServerTest, OneShotRunsAndErrors) {
  start_server();
  Target t = unix_target();
  auto r = post_json(t, "/v1/run", {{"language", "python"}, {"code", "import sys; print(6*7); sys.exit(3)"}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["stdout"], "42\n");
  EXPECT_EQ(r.js()["exit_code"], 3);
  EXPECT_TRUE(r.js()["timing"].contains("total_ms"));

  r = post_json(t, "/v1/run", {{"language", "python"}, {"argv", {"python3", "-c", "print('argv')"}}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["stdout"], "argv\n");

  r = post_json(t, "/v1/run", {{"language", "python"}, {"code", "print(open('in.txt').read())"},
                               {"files", {{{"path", "in.txt"}, {"content_base64", "aGVsbG8="}}}}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["stdout"], "hello\n");

  r = request(t, "POST", "/v1/run", "{not json", {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 400) << r.describe();
  EXPECT_EQ(r.js()["error"]["code"], "invalid_input");
  r = post_json(t, "/v1/run", {{"language", "python"}, {"code", "1"}, {"timeout", "soon"}});
  EXPECT_EQ(r.status, 400) << r.describe();
  EXPECT_NE(r.js()["error"]["message"].get<std::string>().find("timeout"), std::string::npos) << r.describe();
  r = post_json(t, "/v1/run", {{"language", "python"}, {"code", "1"}, {"files", {{{"path", "../x"}, {"content", ""}}}}});
  EXPECT_EQ(r.status, 400) << r.describe();
  EXPECT_EQ(request(t, "GET", "/v1/nothing").status, 404);
  r = request(t, "DELETE", "/v1/run");
  EXPECT_EQ(r.status, 405) << r.describe();
  // A body over the limit is refused from its Content-Length, before it is read.
  r = request(t, "POST", "/v1/run", std::string(17u << 20, 'x'), {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 413) << r.describe();

  r = request(t, "GET", "/healthz");
  EXPECT_EQ(r.js()["status"], "ok") << r.describe();
  r = request(t, "GET", "/metrics");
  EXPECT_NE(r.body.find("vial_http_requests_total{route=\"/v1/run\",status=\"200\"} 3"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("vial_exec_duration_seconds_count{language=\"python\"} 3"), std::string::npos) << r.body;
}

TEST_F(ServerTest, StreamingKeepsOrder) {
  start_server();
  std::string raw;
  auto r = request(unix_target(), "POST", "/v1/run",
                   json{{"language", "python"},
                        {"code", "import sys\nfor i in range(5):\n  print('out', i, flush=True)\n  print('err', i, file=sys.stderr, flush=True)\n"}}
                       .dump(),
                   {{"Content-Type", "application/json"}, {"Accept", "application/x-ndjson"}},
                   [&](const std::string& chunk) { raw += chunk; });
  ASSERT_EQ(r.status, 200) << r.describe();
  std::vector<json> events;
  for (size_t pos = 0, nl; (nl = raw.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    events.push_back(json::parse(raw.substr(pos, nl - pos)));
  }
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["type"], "result") << raw;
  EXPECT_EQ(events.back()["exit_code"], 0) << raw;
  std::string out, err;
  for (const auto& e : events) {
    if (e["type"] == "stdout") out += e["data"].get<std::string>();
    if (e["type"] == "stderr") err += e["data"].get<std::string>();
  }
  EXPECT_EQ(out, "out 0\nout 1\nout 2\nout 3\nout 4\n");
  EXPECT_EQ(err, "err 0\nerr 1\nerr 2\nerr 3\nerr 4\n");
}

TEST_F(ServerTest, SessionsKeepStateAndFiles) {
  start_server();
  Target t = unix_target();
  auto created = post_json(t, "/v1/sessions", {{"language", "python"}, {"idle_timeout", 600}});
  ASSERT_EQ(created.status, 201) << created.describe();
  const std::string id = created.js()["id"];
  const std::string base = "/v1/sessions/" + id;

  auto r = post_json(t, base + "/exec", {{"code", "x = 41\nimport json"}});
  ASSERT_EQ(r.status, 200) << r.describe();
  r = post_json(t, base + "/exec", {{"code", "print(x + 1, json.dumps([1]))"}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["stdout"], "42 [1]\n") << r.describe();

  // A 20 MiB binary file, byte-exact both ways.
  std::string blob(20u << 20, '\0');
  std::mt19937_64 rng(7);
  for (auto& c : blob) c = static_cast<char>(rng());
  r = request(t, "PUT", base + "/files/data/blob.bin?mode=600", blob, {{"Content-Type", "application/octet-stream"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  r = request(t, "GET", base + "/files/data/blob.bin");
  ASSERT_EQ(r.status, 200) << r.describe().substr(0, 200);
  EXPECT_TRUE(r.body == blob) << "download differs: " << r.body.size() << " bytes";
  r = post_json(t, base + "/exec", {{"code", "import os; print(os.path.getsize('data/blob.bin'), oct(os.stat('data/blob.bin').st_mode & 0o777))"}});
  EXPECT_EQ(r.js()["stdout"], "20971520 0o600\n") << r.describe();
  r = request(t, "GET", base + "/files?dir=data");
  ASSERT_EQ(r.status, 200) << r.describe();
  ASSERT_EQ(r.js()["entries"].size(), 1u) << r.describe();
  EXPECT_EQ(r.js()["entries"][0]["name"], "blob.bin");
  EXPECT_EQ(r.js()["entries"][0]["size"], 20971520);

  // Paths that leave the home are refused, a symlink made inside the guest included.
  ASSERT_EQ(post_json(t, base + "/exec", {{"code", "import os; os.symlink('/etc', 'etc-link')"}}).status, 200);
  for (const std::string path : {"../../etc/passwd", "%2Fetc%2Fpasswd", "etc-link/passwd", "data/../../x"}) {
    r = request(t, "GET", base + "/files/" + path);
    EXPECT_EQ(r.status, 400) << path << ": " << r.describe();
  }
  EXPECT_EQ(request(t, "GET", base + "/files/missing.txt").status, 404);

  r = request(t, "GET", "/v1/sessions");
  ASSERT_EQ(r.js()["sessions"].size(), 1u) << r.describe();
  EXPECT_EQ(r.js()["sessions"][0]["execs"], 4);
  EXPECT_EQ(request(t, "DELETE", base).status, 200);
  EXPECT_EQ(request(t, "DELETE", base).status, 404);
  EXPECT_EQ(post_json(t, base + "/exec", {{"code", "1"}}).status, 404);
  EXPECT_EQ(post_json(t, "/v1/sessions", {{"language", "cobol"}}).status, 400);
}

TEST_F(ServerTest, IdleSessionsAreReaped) {
  start_server();
  auto created = post_json(unix_target(), "/v1/sessions", {{"language", "python"}, {"idle_timeout", 1}});
  ASSERT_EQ(created.status, 201) << created.describe();
  const std::string path = "/v1/sessions/" + created.js()["id"].get<std::string>();
  const auto until = std::chrono::steady_clock::now() + 60s;
  int status = 200;
  while (status == 200 && std::chrono::steady_clock::now() < until) {
    server_->pump_for(500ms);
    status = request(unix_target(), "GET", path).status;
  }
  EXPECT_EQ(status, 404);
}

TEST_F(ServerTest, ClientDisconnectCancelsTheRun) {
  start_server();
  {
    asio::io_context io;
    asio::local::stream_protocol::socket s(io);
    s.connect(asio::local::stream_protocol::endpoint(socket().string()));
    http::request<http::string_body> req{http::verb::post, "/v1/run", 11};
    req.set(http::field::host, "vial");
    req.set(http::field::content_type, "application/json");
    req.set(http::field::accept, "application/x-ndjson");
    req.body() = json{{"language", "python"}, {"code", "import time\nprint('started', flush=True)\ntime.sleep(600)"}}.dump();
    req.prepare_payload();
    http::write(s, req);
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    http::read_header(s, buffer, parser);
    std::string seen;
    auto collect = [&](uint64_t, std::string_view data, boost::system::error_code&) {
      seen.append(data);
      return data.size();
    };
    parser.on_chunk_body(collect);
    while (seen.find("started") == std::string::npos) http::read_some(s, buffer, parser);
  }  // hang up mid-run
  // The VM goes away at once: only the refilled pool VM remains.
  const auto until = std::chrono::steady_clock::now() + 60s;
  std::string metrics;
  while (std::chrono::steady_clock::now() < until) {
    server_->pump_for(200ms);
    metrics = request(unix_target(), "GET", "/metrics").body;
    if (metrics.find("vial_sandboxes{state=\"in_use\"} 0\n") != std::string::npos &&
        metrics.find("vial_runs_in_flight 0\n") != std::string::npos) {
      break;
    }
  }
  EXPECT_NE(metrics.find("vial_sandboxes{state=\"in_use\"} 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("vial_runs_in_flight 0\n"), std::string::npos) << metrics;
}

TEST_F(ServerTest, SigtermWithWorkInFlightLeavesNothing) {
  start_server({"--grace", "2"});
  auto created = post_json(unix_target(), "/v1/sessions", {{"language", "python"}});
  ASSERT_EQ(created.status, 201) << created.describe();
  std::thread slow([&] {
    try {
      post_json(unix_target(), "/v1/run", {{"language", "python"}, {"code", "import time; time.sleep(600)"}});
    } catch (const std::exception&) {
      // the server closes the connection at shutdown
    }
  });
  ASSERT_TRUE(wait_for_qemu(home().string() + "/", 30s));
  server_->pump_for(2s);
  CliResult r = stop_server();
  slow.join();
  EXPECT_NE(r.err.find("shutting down"), std::string::npos) << r.describe();
  // VialHomeTest::TearDown checks QEMU processes, run/ and overlays.
}

TEST_F(ServerTest, ConcurrentOneShotRuns) {
  start_server();
  constexpr int kRuns = 50;
  std::vector<std::string> outputs(kRuns);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRuns; ++i) {
    threads.emplace_back([&, i] {
      try {
        auto r = post_json(unix_target(), "/v1/run", {{"language", "python"}, {"code", "print(" + std::to_string(i) + " * 3)"}});
        outputs[i] = r.status == 200 ? r.js()["stdout"].get<std::string>() : r.describe();
      } catch (const std::exception& e) {
        outputs[i] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < kRuns; ++i) EXPECT_EQ(outputs[i], std::to_string(i * 3) + "\n") << "run " << i;
}

TEST_F(ServerTest, TcpNeedsTheBearerToken) {
  const fs::path token_file = home() / "token";
  std::ofstream(token_file) << "0123456789abcdef0123456789abcdef\n";
  auto refused = vial({"serve", "--listen", "127.0.0.1:1", "--socket", (home() / "other.sock").string()});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("--token-file"), std::string::npos) << refused.describe();

  const unsigned short port = free_loopback_port();
  start_server({"--listen", "127.0.0.1:" + std::to_string(port), "--token-file", token_file.string()});
  Target anonymous{{}, port, {}};
  EXPECT_EQ(request(anonymous, "GET", "/healthz").status, 200);
  auto r = request(anonymous, "GET", "/v1/sessions");
  EXPECT_EQ(r.status, 401) << r.describe();
  EXPECT_EQ(r.headers["WWW-Authenticate"], "Bearer");
  EXPECT_EQ(request({{}, port, "wrong-token-wrong-token"}, "GET", "/v1/sessions").status, 403);
  Target authed{{}, port, "0123456789abcdef0123456789abcdef"};
  r = post_json(authed, "/v1/run", {{"language", "python"}, {"code", "print('tcp')"}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["stdout"], "tcp\n");
}

TEST_F(ServerTest, CliUsesTheDaemon) {
  start_server();
  wait_for_warm_python();
  CliOptions o = options();
  auto r = vial({"run", "-l", "python", "--json", "-c", "print('via daemon')"}, o);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto j = json::parse(r.out, nullptr, false);
  EXPECT_EQ(j["stdout"], "via daemon\n") << r.describe();
  EXPECT_EQ(j["source"], "warm") << r.describe();
  r = vial({"run", "-l", "python", "-c", "import sys; print('out'); sys.exit(4)"}, o);
  EXPECT_EQ(r.exit_code, 4) << r.describe();
  EXPECT_EQ(r.out, "out\n") << r.describe();

  auto created = vial({"session", "create", "-l", "python"}, o);
  ASSERT_EQ(created.exit_code, 0) << created.describe();
  std::string id = created.out.substr(0, created.out.find('\n'));
  EXPECT_EQ(vial({"session", "exec", id, "-c", "y = 'kept'"}, o).exit_code, 0);
  r = vial({"session", "exec", id, "-c", "print(y)"}, o);
  EXPECT_EQ(r.out, "kept\n") << r.describe();
  std::ofstream(home() / "local.txt") << "local file\n";
  EXPECT_EQ(vial({"session", "put", id, (home() / "local.txt").string(), "up.txt"}, o).exit_code, 0);
  r = vial({"session", "get", id, "up.txt"}, o);
  EXPECT_EQ(r.out, "local file\n") << r.describe();
  r = vial({"session", "ls", "--json"}, o);
  EXPECT_NE(r.out.find(id), std::string::npos) << r.describe();
  EXPECT_EQ(vial({"session", "rm", id}, o).exit_code, 0);
  r = vial({"session", "exec", id, "-c", "1"}, o);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no session"), std::string::npos) << r.describe();
}

TEST_F(ServerTest, MachinesAsResources) {
  start_server();
  Target t = unix_target();
  auto r = post_json(t, "/v1/machines", {{"name", "web-1"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  EXPECT_EQ(r.js()["state"], "created");
  EXPECT_EQ(post_json(t, "/v1/machines", {{"name", "web-1"}}).status, 409);
  EXPECT_EQ(post_json(t, "/v1/machines", {{"name", "Bad Name!"}}).status, 400);
  EXPECT_EQ(post_json(t, "/v1/machines", {{"name", "x"}, {"cpu", 2}}).status, 400);
  EXPECT_EQ(request(t, "GET", "/v1/machines/nobody").status, 404);
  EXPECT_EQ(post_json(t, "/v1/machines/web-1/exec", {{"argv", {"true"}}}).status, 409);  // not running

  r = post_json(t, "/v1/machines/web-1/start", json::object());
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["state"], "running");
  EXPECT_EQ(post_json(t, "/v1/machines/web-1/start", json::object()).status, 409);
  // One store: the CLI sees what the API made.
  auto ls = vial({"machine", "ls", "--json"}, options());
  EXPECT_NE(ls.out.find("\"web-1\""), std::string::npos) << ls.describe();

  r = post_json(t, "/v1/machines/web-1/exec",
                {{"argv", {"sh", "-c", "echo \"$GREETING from $(id -un)\"; cat; echo err >&2; exit 3"}},
                 {"env", {{"GREETING", "hello"}}},
                 {"stdin", "piped\n"}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["stdout"], "hello from root\npiped\n");
  EXPECT_EQ(r.js()["stderr"], "err\n");
  EXPECT_EQ(r.js()["exit_code"], 3);
  EXPECT_EQ(r.js()["source"], "machine");
  r = request(t, "POST", "/v1/machines/web-1/exec", json{{"argv", {"sh", "-c", "echo a; echo b >&2; echo c"}}}.dump(),
              {{"Content-Type", "application/json"}, {"Accept", "application/x-ndjson"}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_LT(r.body.find("\"a\\n\""), r.body.find("\"c\\n\"")) << r.body;
  EXPECT_NE(r.body.find("\"type\":\"result\""), std::string::npos) << r.body;
  EXPECT_EQ(post_json(t, "/v1/machines/web-1/exec", {{"argv", json::array()}}).status, 400);

  EXPECT_EQ(request(t, "DELETE", "/v1/machines/web-1").status, 409);  // running, no force
  r = post_json(t, "/v1/machines/web-1/stop", json::object());
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.js()["state"], "stopped");
  r = request(t, "GET", "/v1/machines");
  EXPECT_EQ(r.js()["machines"].size(), 1u) << r.describe();
  EXPECT_EQ(request(t, "DELETE", "/v1/machines/web-1").status, 200);
  EXPECT_EQ(request(t, "GET", "/v1/machines").js()["machines"].size(), 0u);
}


// Byte-exact output and stdin (issue 14): every byte value, plus invalid UTF-8 (a reversed BOM,
// a lone continuation byte, a character split across two writes) on every surface.
std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s += static_cast<char>(i);
  return s;
}

// stdout: the 256 byte values, \xff\xfe, a lone \x80, then text with a euro sign split across
// two writes (so two chunks, most likely, each invalid on its own). stderr: the values reversed.
const std::string kBinaryPython =
    "import sys, time\n"
    "o, e = sys.stdout.buffer, sys.stderr.buffer\n"
    "o.write(bytes(range(256)) + b'\\xff\\xfe\\x80'); o.flush()\n"
    "e.write(bytes(range(255, -1, -1))); e.flush()\n"
    "time.sleep(0.2)\n"
    "o.write(b' split \\xe2\\x82'); o.flush()\n"
    "time.sleep(0.2)\n"
    "o.write(b'\\xac euro\\n'); o.flush()\n";
const std::string kBinaryStdout = all_bytes() + "\xff\xfe\x80 split \xe2\x82\xac euro\n";
const std::string kBinaryStderr = [] {
  std::string s = all_bytes();
  return std::string(s.rbegin(), s.rend());
}();
// Echoes stdin to stdout byte for byte.
const std::string kEchoPython = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())";
const std::string kBinaryStdin = all_bytes() + "\xff\xfe" + "\x80" + "\xe2\x82";

// The bytes of `name` in a reply: the text field, or the `_base64` one (never both).
std::string bytes_of(const json& j, const std::string& name) {
  EXPECT_NE(j.contains(name), j.contains(name + "_base64")) << j.dump();
  if (j.contains(name + "_base64")) return base64_decode(j[name + "_base64"].get<std::string>());
  return j.value(name, "");
}

// NDJSON events of a streamed reply, and the bytes of their stdout / stderr events.
struct Streamed {
  std::vector<json> events;
  std::string out, err;
  int encoded = 0;  // events that came as data_base64
};
Streamed parse_stream(const std::string& raw) {
  Streamed s;
  for (size_t pos = 0, nl; (nl = raw.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    s.events.push_back(json::parse(raw.substr(pos, nl - pos)));
  }
  for (const auto& e : s.events) {
    if (e["type"] != "stdout" && e["type"] != "stderr") continue;
    (e["type"] == "stdout" ? s.out : s.err) += bytes_of(e, "data");
    s.encoded += e.contains("data_base64");
  }
  return s;
}

Reply post_ndjson(const Target& t, const std::string& path, const json& body) {
  return request(t, "POST", path, body.dump(), {{"Content-Type", "application/json"}, {"Accept", "application/x-ndjson"}});
}

TEST_F(ServerTest, BinaryOutputOverHttpRunsAndSessions) {
  start_server();
  Target t = unix_target();
  // POST /v1/run, JSON.
  auto r = post_json(t, "/v1/run", {{"language", "python"}, {"code", kBinaryPython}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stdout") == kBinaryStdout) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stderr") == kBinaryStderr) << r.describe();
  EXPECT_TRUE(r.js().contains("stdout_base64")) << r.describe();
  // POST /v1/run, NDJSON.
  r = post_ndjson(t, "/v1/run", {{"language", "python"}, {"code", kBinaryPython}});
  ASSERT_EQ(r.status, 200) << r.describe();
  Streamed st = parse_stream(r.body);
  EXPECT_TRUE(st.out == kBinaryStdout) << r.body;
  EXPECT_TRUE(st.err == kBinaryStderr) << r.body;
  EXPECT_GE(st.encoded, 1) << r.body;
  EXPECT_EQ(st.events.back()["type"], "result") << r.body;
  // stdin_base64, both ways.
  const json echo = {{"language", "python"}, {"code", kEchoPython}, {"stdin_base64", base64_encode(kBinaryStdin)}};
  r = post_json(t, "/v1/run", echo);
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stdout") == kBinaryStdin) << r.describe();
  r = post_ndjson(t, "/v1/run", echo);
  EXPECT_TRUE(parse_stream(r.body).out == kBinaryStdin) << r.body;
  r = post_json(t, "/v1/run", {{"language", "python"}, {"code", "1"}, {"stdin", "a"}, {"stdin_base64", "YQ=="}});
  EXPECT_EQ(r.status, 400) << r.describe();

  // Sessions: exec (JSON, NDJSON, stdin) and files.
  auto created = post_json(t, "/v1/sessions", {{"language", "python"}});
  ASSERT_EQ(created.status, 201) << created.describe();
  const std::string base = "/v1/sessions/" + created.js()["id"].get<std::string>();
  r = post_json(t, base + "/exec", {{"code", kBinaryPython}});
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stdout") == kBinaryStdout) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stderr") == kBinaryStderr) << r.describe();
  r = post_ndjson(t, base + "/exec", {{"code", kBinaryPython}});
  st = parse_stream(r.body);
  EXPECT_TRUE(st.out == kBinaryStdout) << r.body;
  EXPECT_TRUE(st.err == kBinaryStderr) << r.body;
  r = post_json(t, base + "/exec", {{"code", kEchoPython}, {"stdin_base64", base64_encode(kBinaryStdin)}});
  EXPECT_TRUE(bytes_of(r.js(), "stdout") == kBinaryStdin) << r.describe();
  r = request(t, "PUT", base + "/files/bytes.bin", kBinaryStdin, {{"Content-Type", "application/octet-stream"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  r = post_json(t, base + "/exec", {{"code", "import sys; sys.stdout.buffer.write(open('bytes.bin', 'rb').read())"}});
  EXPECT_TRUE(bytes_of(r.js(), "stdout") == kBinaryStdin) << r.describe();
  r = request(t, "GET", base + "/files/bytes.bin");
  EXPECT_TRUE(r.body == kBinaryStdin) << r.describe();
}

TEST_F(ServerTest, BinaryOutputThroughTheCli) {
  start_server();
  wait_for_warm_python();
  CliOptions o = options();
  auto r = vial({"run", "-l", "python", "-c", kBinaryPython}, o);
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(r.out == kBinaryStdout) << r.describe();
  EXPECT_NE(r.err.find(kBinaryStderr), std::string::npos) << r.describe();
  o.stdin_data = kBinaryStdin;
  r = vial({"run", "-l", "python", "-i", "-c", kEchoPython}, o);
  EXPECT_TRUE(r.out == kBinaryStdin) << r.describe();
  o.stdin_data.reset();
  r = vial({"run", "-l", "python", "--json", "-c", kBinaryPython}, o);
  auto j = json::parse(r.out, nullptr, false);
  EXPECT_TRUE(bytes_of(j, "stdout") == kBinaryStdout) << r.describe();
  EXPECT_TRUE(bytes_of(j, "stderr") == kBinaryStderr) << r.describe();
  // Those went through the daemon, not an engine of their own.
  auto metrics = request(unix_target(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("vial_http_requests_total{route=\"/v1/run\",status=\"200\"} 3"), std::string::npos) << metrics;

  auto created = vial({"session", "create", "-l", "python"}, o);
  ASSERT_EQ(created.exit_code, 0) << created.describe();
  const std::string id = created.out.substr(0, created.out.find('\n'));
  r = vial({"session", "exec", id, "-c", kBinaryPython}, o);
  EXPECT_TRUE(r.out == kBinaryStdout) << r.describe();
  EXPECT_NE(r.err.find(kBinaryStderr), std::string::npos) << r.describe();
  o.stdin_data = kBinaryStdin;
  r = vial({"session", "exec", id, "-i", "-c", kEchoPython}, o);
  EXPECT_TRUE(r.out == kBinaryStdin) << r.describe();
  o.stdin_data.reset();
  std::ofstream(home() / "bytes.bin", std::ios::binary) << kBinaryStdin;
  EXPECT_EQ(vial({"session", "put", id, (home() / "bytes.bin").string(), "up.bin"}, o).exit_code, 0);
  r = vial({"session", "get", id, "up.bin"}, o);
  EXPECT_TRUE(r.out == kBinaryStdin) << r.describe();
  EXPECT_EQ(vial({"session", "rm", id}, o).exit_code, 0);
}

TEST_F(ServerTest, BinaryOutputFromMachineExec) {
  start_server();
  Target t = unix_target();
  ASSERT_EQ(post_json(t, "/v1/machines", {{"name", "bytes"}}).status, 201);
  auto r = post_json(t, "/v1/machines/bytes/start", json::object());
  ASSERT_EQ(r.status, 200) << r.describe();
  // stdin comes back on stdout, then a character split across two writes; stdin again on stderr.
  const json exec = {
      {"argv", {"sh", "-c", "cat >/tmp/in; cat /tmp/in; printf 'split \\342\\202'; sleep 0.3; printf '\\254\\n'; cat /tmp/in >&2"}},
      {"stdin_base64", base64_encode(kBinaryStdin)}};
  const std::string want_out = kBinaryStdin + "split \xe2\x82\xac\n";
  r = post_json(t, "/v1/machines/bytes/exec", exec);
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stdout") == want_out) << r.describe();
  EXPECT_TRUE(bytes_of(r.js(), "stderr") == kBinaryStdin) << r.describe();
  r = post_ndjson(t, "/v1/machines/bytes/exec", exec);
  ASSERT_EQ(r.status, 200) << r.describe();
  Streamed st = parse_stream(r.body);
  EXPECT_TRUE(st.out == want_out) << r.body;
  EXPECT_TRUE(st.err == kBinaryStdin) << r.body;
  EXPECT_EQ(request(t, "DELETE", "/v1/machines/bytes?force=true").status, 200);
}

}  // namespace
}  // namespace vial::test
