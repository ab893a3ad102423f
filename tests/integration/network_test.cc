// Guest networking (issue 13) end to end: the real binary, real microVMs (TCG where KVM is
// unusable), a private VIAL_HOME per test, and local servers (net_test_server.py) that the test
// starts on 127.0.0.2 and 127.0.0.3. Nothing here talks to any other address, not even from
// inside a guest: names are --add-host names or names the policy denies (never resolved on the
// host), and the only other destinations are ones the policy refuses before any connect.
//
// Rules the guest meets here (docs/SECURITY.md): all of 127/8 is blocked unless an --allow-cidr
// rule names it, so each test allows 127.0.0.2/32 (and, where it needs it, 127.0.0.3/32).
//
// Each guest program prints one "label: ok RESULT" or "label: error TYPE MESSAGE" line per check,
// so one VM covers several checks. The fixture's TearDown (VialHomeTest) checks that no QEMU
// process, run folder or overlay is left behind.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_harness.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace vial::test {
namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// `text` with every "{{KEY}}" replaced by its value.
std::string fill(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [key, value] : vars) {
    const std::string needle = "{{" + key + "}}";
    for (size_t pos; (pos = text.find(needle)) != std::string::npos;) text.replace(pos, needle.size(), value);
  }
  return text;
}

// An executable by name: /usr/bin, /bin, then $PATH; empty if none.
fs::path find_program(const std::string& name) {
  std::error_code ec;
  for (const char* dir : {"/usr/bin", "/bin"}) {
    if (fs::exists(fs::path(dir) / name, ec)) return fs::path(dir) / name;
  }
  if (const char* path = std::getenv("PATH")) {
    std::istringstream in(path);
    for (std::string dir; std::getline(in, dir, ':');) {
      if (!dir.empty() && ::access((fs::path(dir) / name).c_str(), X_OK) == 0) return fs::path(dir) / name;
    }
  }
  return {};
}

// The "label: result" lines a guest program printed (see kPrelude), by label.
std::map<std::string, std::string> checks_of(const std::string& out) {
  std::map<std::string, std::string> found;
  for (const auto& line : lines_of(out)) {
    size_t colon = line.find(": ");
    if (colon != std::string::npos && colon > 0 && line.find(' ') > colon)
      found[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return found;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// One TCP socket of /proc/net/tcp.
struct TcpEntry {
  uint32_t local_ip = 0, remote_ip = 0;  // host byte order: 127.0.0.2 == 0x7f000002
  uint16_t local_port = 0, remote_port = 0;
  int state = 0;  // 1 ESTABLISHED, 10 LISTEN
};

std::vector<TcpEntry> tcp_table() {
  std::vector<TcpEntry> out;
  auto lines = lines_of(read_text("/proc/net/tcp"));
  auto endpoint = [](const std::string& text, uint32_t& ip, uint16_t& port) {
    size_t colon = text.find(':');
    ip = ntohl(static_cast<uint32_t>(std::stoul(text.substr(0, colon), nullptr, 16)));
    port = static_cast<uint16_t>(std::stoul(text.substr(colon + 1), nullptr, 16));
  };
  for (size_t i = 1; i < lines.size(); ++i) {
    std::istringstream in(lines[i]);
    std::string sl, local, remote, state;
    if (!(in >> sl >> local >> remote >> state)) continue;
    TcpEntry e;
    endpoint(local, e.local_ip, e.local_port);
    endpoint(remote, e.remote_ip, e.remote_port);
    e.state = static_cast<int>(std::stoul(state, nullptr, 16));
    out.push_back(e);
  }
  return out;
}

constexpr uint32_t kIp2 = 0x7f000002;  // 127.0.0.2
constexpr uint32_t kLoopback = 0x7f000001;

// ESTABLISHED sockets on this host with ip:port at either end.
int established_with(uint32_t ip, uint16_t port) {
  int n = 0;
  for (const auto& e : tcp_table()) {
    if (e.state == 1 && ((e.local_ip == ip && e.local_port == port) || (e.remote_ip == ip && e.remote_port == port)))
      ++n;
  }
  return n;
}

bool listening_on(uint32_t ip, uint16_t port) {
  for (const auto& e : tcp_table()) {
    if (e.state == 10 && e.local_ip == ip && e.local_port == port) return true;
  }
  return false;
}

// Polls `done` every 100 ms until it holds or `timeout` passes; returns its last value.
template <typename F>
bool eventually(F done, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= end) return done();
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

size_t fd_count(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// A TCP socket of the test itself on 127.0.0.1, bound (and listening when asked).
class HostSocket {
 public:
  explicit HostSocket(bool listen, uint16_t port = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(kLoopback);
    a.sin_port = htons(port);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    if (listen) ::listen(fd_, 4);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~HostSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  HostSocket(const HostSocket&) = delete;
  HostSocket& operator=(const HostSocket&) = delete;
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// A port on 127.0.0.1 that was free a moment ago.
uint16_t free_port() { return HostSocket(false).port(); }

// GET `path` from ip:port over plain HTTP/1.0, from the host: the response, or "" on failure
// (refused, reset, nothing within 10 s).
std::string host_http_get(uint32_t ip, uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons(port);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) response.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return response;
}

// Does connect() to ip:port from the host fail with ECONNREFUSED (nothing listens there)?
bool host_connect_refused(uint32_t ip, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons(port);
  int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  int err = errno;
  ::close(fd);
  return r != 0 && err == ECONNREFUSED;
}

// Helpers every guest program starts with (python 3 in the guest). Each check prints one line.
constexpr const char* kPrelude = R"PY(
import os, socket, ssl, struct, subprocess, sys, time, urllib.request

def check(label, f):
    try:
        result = "ok " + str(f())
    except Exception as e:
        result = "error " + type(e).__name__ + " " + str(e)
    print(label + ": " + result.replace("\n", " | "), flush=True)

def read_all(s):
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return data
        data += d

def http_get(ip, port, host, path="/hello"):
    with socket.create_connection((ip, port), timeout=30) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        data = read_all(s)
    if not data:
        raise EOFError("closed without a response")
    return data.partition(b"\r\n\r\n")[2].decode()

def tls_get(host, port, sni):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    with socket.create_connection((host, port), timeout=30) as s:
        with ctx.wrap_socket(s, server_hostname=sni) as t:
            t.sendall(("GET /hello HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % sni).encode())
            data = read_all(t)
    return data.partition(b"\r\n\r\n")[2].decode()

def resolve(name):
    return socket.gethostbyname(name)

def send_udp(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"from the guest", (ip, port))
    s.close()
    return "sent"

# A DNS query for good.test, type A.
DNS_QUERY = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04good\x04test\x00\x00\x01\x00\x01"
)PY";

class NetworkTest : public VialHomeTest {
 protected:
  void SetUp() override {
    VialHomeTest::SetUp();
    // Only the daemon a test starts itself (on this home's default socket) may serve its runs.
    ::unsetenv("VIAL_SOCKET");
  }

  void TearDown() override {
    // A failed test may leave a machine or a daemon: remove them, so the leak checks see the truth.
    stop_daemon(/*expect_clean=*/false);
    auto ls = vial({"machine", "ls", "--json"});
    auto machines = json::parse(ls.out, nullptr, false);
    if (machines.is_array()) {
      for (const auto& m : machines) vial({"machine", "delete", "-f", m.value("name", "")});
    }
    server_.reset();  // SIGKILLs the test server
    VialHomeTest::TearDown();
  }

  // ---- the local test server ----

  // Starts net_test_server.py on 127.0.0.2 and 127.0.0.3 and reads its ports.
  void start_server() {
    const fs::path python = find_program("python3");
    if (python.empty() || find_program("openssl").empty()) GTEST_SKIP() << "python3 and openssl are needed on the host";
    const fs::path script = fs::path(__FILE__).parent_path() / "net_test_server.py";
    ASSERT_TRUE(fs::exists(script)) << script;
    server_log_ = home() / "net-server.log";
    CliOptions o;
    o.deadline = 1800s;
    server_ = std::make_unique<CliProcess>(
        std::vector<std::string>{python.string(), script.string(), "--out", server_log_.string(), "--lifetime", "1500",
                                 "127.0.0.2", "127.0.0.3"},
        o);
    const auto until = Clock::now() + 60s;
    while (read_text(server_log_).find("\nready\n") == std::string::npos) {
      if (Clock::now() >= until || !server_->pump_for(100ms)) {
        FAIL() << "the test server did not start: " << server_->finish().describe() << "\n"
               << read_text(server_log_.string() + ".err");
      }
    }
    ports_ = json::parse(lines_of(read_text(server_log_)).at(0));
    ASSERT_TRUE(ports_.is_object() && ports_.contains("127.0.0.2")) << ports_;
  }

  uint16_t port(const std::string& address, const std::string& kind) const {
    return ports_.at(address).at(kind).get<uint16_t>();
  }
  std::string port_str(const std::string& address, const std::string& kind) const {
    return std::to_string(port(address, kind));
  }
  // The variables every guest program may use.
  std::map<std::string, std::string> ports_vars() const {
    return {{"HTTP", port_str("127.0.0.2", "http")},
            {"HTTPS", port_str("127.0.0.2", "https")},
            {"UDP", port_str("127.0.0.2", "udp")},
            {"HTTP3", port_str("127.0.0.3", "http")},
            {"UDP3", port_str("127.0.0.3", "udp")}};
  }
  std::string program(const std::string& body) const { return fill(std::string(kPrelude) + body, ports_vars()); }

  // What the test server saw: its "tcp ..." or "udp ..." lines.
  std::vector<std::string> server_events(const std::string& prefix) const {
    std::vector<std::string> out;
    for (const auto& line : lines_of(read_text(server_log_))) {
      if (starts_with(line, prefix)) out.push_back(line);
    }
    return out;
  }
  std::string server_log() const { return read_text(server_log_); }

  // ---- the egress log ----

  std::vector<json> egress_events() const {
    std::vector<json> out;
    for (const auto& line : lines_of(read_text(home() / "logs" / "egress.ndjson"))) {
      auto j = json::parse(line, nullptr, false);
      if (j.is_object()) out.push_back(j);
    }
    return out;
  }
  std::string egress_dump() const { return "egress log:\n" + read_text(home() / "logs" / "egress.ndjson"); }
  // Events matching every given field exactly (strings, numbers, booleans).
  static std::vector<json> matching(const std::vector<json>& events, const json& fields) {
    std::vector<json> out;
    for (const auto& e : events) {
      bool ok = true;
      for (const auto& [k, v] : fields.items()) ok = ok && e.contains(k) && e[k] == v;
      if (ok) out.push_back(e);
    }
    return out;
  }

  // ---- runs ----

  // `vial run -l python --json FLAGS... -c CODE`: the parsed JSON (null on failure, reported).
  json run_json(const std::vector<std::string>& flags, const std::string& code) {
    std::vector<std::string> args = {"run", "-l", "python", "--json"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"-c", code});
    auto o = options();
    o.deadline = 400s;
    CliResult r = vial(args, o);
    auto j = json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << "vial run --json printed no JSON object: " << r.describe();
    EXPECT_FALSE(r.deadline_hit) << r.describe();
    return j.is_object() ? j : json();
  }

  // The policy of most tests: good.test is 127.0.0.2, the only address and name allowed.
  static std::vector<std::string> good_only() {
    return {"--allow-cidr", "127.0.0.2/32", "--add-host", "good.test:127.0.0.2", "--allow-host", "good.test"};
  }

  // ---- machines ----

  CliResult machine_exec(const std::string& name, const std::vector<std::string>& argv) const {
    std::vector<std::string> args = {"machine", "exec", "--name", name, "--timeout", "5m", "--"};
    args.insert(args.end(), argv.begin(), argv.end());
    auto o = options();
    o.deadline = 400s;
    return vial(args, o);
  }
  std::vector<std::string> machine_names() const {
    auto r = vial({"machine", "ls", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    std::vector<std::string> names;
    auto j = json::parse(r.out, nullptr, false);
    if (j.is_array()) {
      for (const auto& m : j) names.push_back(m.value("name", ""));
    }
    return names;
  }

  // ---- a `vial serve` on this home's default socket ----

  void start_daemon() {
    CliOptions o = options();
    o.deadline = 1800s;
    daemon_ = start_vial({"serve", "--pool", "python=0", "--max-vms", "2", "--queue-timeout", "600"}, o);
    const auto until = Clock::now() + 120s;
    while (Clock::now() < until) {
      if (!daemon_->pump_for(200ms)) break;
      std::error_code ec;
      if (!fs::exists(home() / "run" / "vial.sock", ec)) continue;
      if (vial({"session", "ls", "--json"}).exit_code == 0) return;
    }
    FAIL() << "vial serve did not come up: " << daemon_->finish().describe();
  }
  void stop_daemon(bool expect_clean = true) {
    if (!daemon_) return;
    daemon_->send_signal(SIGTERM);
    CliResult r = daemon_->finish();
    daemon_.reset();
    if (expect_clean) {
      EXPECT_EQ(r.exit_code, 0) << r.describe();
    }
  }

  std::unique_ptr<CliProcess> server_;
  fs::path server_log_;
  json ports_;
  std::unique_ptr<CliProcess> daemon_;
};

// Machine tests keep their boot snapshots out of the shared templates: the last machine of a home
// removes them (see machine_lifecycle_test.cc).
class NetworkMachineTest : public NetworkTest {
 protected:
  void SetUp() override {
    NetworkTest::SetUp();
    private_dir("templates");
  }
};

// 1. No flag: the guest has only `lo`, a connection to the test server fails in the guest, DNS
// fails, and the server sees nothing. --add-host alone does not turn the network on.
TEST_F(NetworkTest, NoFlagMeansNoNetwork) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  auto j = run_json({"--add-host", "good.test:127.0.0.2"}, program(R"PY(
check("ifaces", lambda: ",".join(name for _, name in socket.if_nameindex()))
check("connect", lambda: http_get("127.0.0.2", {{HTTP}}, "good.test"))
check("dns", lambda: resolve("good.test"))
check("udp", lambda: send_udp("127.0.0.2", {{UDP}}))
)PY"));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("exit_code", -1), 0) << j.dump();
  auto c = checks_of(j.value("stdout", ""));
  EXPECT_EQ(c["ifaces"], "ok lo") << j.dump();
  EXPECT_TRUE(starts_with(c["connect"], "error ConnectionRefusedError")) << c["connect"];
  EXPECT_TRUE(starts_with(c["dns"], "error gaierror")) << c["dns"];
  EXPECT_EQ(c["udp"], "ok sent");
  EXPECT_FALSE(j.contains("network")) << "a VM without a network reports no network counts: " << j.dump();
  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(server_events("tcp ").empty()) << server_log();
  EXPECT_TRUE(server_events("udp ").empty()) << server_log();
  EXPECT_TRUE(egress_events().empty()) << egress_dump();
}

// 2. An allowed name works for HTTP, HTTPS (SNI good.test) and pip from a local index, as the
// sandbox user; the VM still has no NIC, only `lo`.
TEST_F(NetworkTest, AllowedNameWorksOverHttpHttpsAndPip) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  std::vector<std::string> flags = good_only();
  flags.insert(flags.end(), {"--add-host", "pypi.test:127.0.0.2", "--allow-host", "pypi.test", "-t", "300"});
  auto j = run_json(flags, program(R"PY(
check("uid", os.getuid)
check("ifaces", lambda: ",".join(name for _, name in socket.if_nameindex()))
check("dns", lambda: resolve("good.test"))
check("http", lambda: urllib.request.urlopen("http://good.test:{{HTTP}}/hello", timeout=60).read().decode())
check("https", lambda: tls_get("good.test", {{HTTPS}}, "good.test"))

def pip_install():
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir",
           "--index-url", "http://pypi.test:{{HTTP}}/simple", "--trusted-host", "pypi.test", "vialdemo"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if r.returncode != 0 and "externally-managed-environment" in r.stdout + r.stderr:
        # An image built with Debian's EXTERNALLY-MANAGED marker: report it, install anyway.
        print("pip-externally-managed: yes", flush=True)
        r = subprocess.run(cmd + ["--break-system-packages", "--user"], capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        raise RuntimeError("pip exited %d: %s %s" % (r.returncode, r.stdout[-800:], r.stderr[-1500:]))
    return "installed"
check("pip", pip_install)
check("import", lambda: subprocess.run([sys.executable, "-c", "import vialdemo; print(vialdemo.GREETING)"],
                                       capture_output=True, text=True, timeout=120).stdout.strip())
)PY"));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("exit_code", -1), 0) << j.dump();
  auto c = checks_of(j.value("stdout", ""));
  EXPECT_EQ(c["uid"], "ok 1000") << "guest programs run as the sandbox user";
  EXPECT_EQ(c["ifaces"], "ok lo") << "a network never adds a NIC";
  EXPECT_EQ(c["dns"], "ok 127.0.0.2");
  EXPECT_EQ(c["http"], "ok hello from 127.0.0.2");
  EXPECT_EQ(c["https"], "ok tls hello");
  EXPECT_EQ(c["pip"], "ok installed");
  EXPECT_EQ(c["import"], "ok installed from the local index");
  EXPECT_EQ(c.count("pip-externally-managed"), 0u)
      << "pip refused with externally-managed-environment: the image still has Debian's marker "
         "(installed with --break-system-packages --user instead)";

  ASSERT_TRUE(j.contains("network") && j["network"].is_object()) << j.dump();
  EXPECT_GE(j["network"].value("allowed", 0), 5) << j["network"];
  EXPECT_EQ(j["network"].value("denied", -1), 0) << j["network"] << "\n" << egress_dump();

  auto events = egress_events();
  EXPECT_FALSE(
      matching(events, {{"proto", "dns"}, {"name", "good.test"}, {"allowed", true}, {"rule", "add-host"}}).empty())
      << egress_dump();
  EXPECT_FALSE(matching(events, {{"proto", "dns"}, {"name", "pypi.test"}, {"allowed", true}}).empty()) << egress_dump();
  auto https = matching(events, {{"proto", "tcp"},
                                 {"address", "127.0.0.2"},
                                 {"port", port("127.0.0.2", "https")},
                                 {"allowed", true},
                                 {"rule", "allow-cidr 127.0.0.2/32"}});
  ASSERT_FALSE(https.empty()) << egress_dump();
  EXPECT_EQ(https[0]["name"], "good.test");
  EXPECT_GT(https[0]["bytes_down"].get<uint64_t>(), 0u);
  EXPECT_GT(https[0]["bytes_up"].get<uint64_t>(), 0u);
  // pip fetched the index and the wheel through vial.
  uint64_t pip_bytes = 0;
  for (const auto& e : matching(events, {{"proto", "tcp"}, {"name", "pypi.test"}, {"allowed", true}})) {
    pip_bytes += e["bytes_down"].get<uint64_t>();
  }
  EXPECT_GT(pip_bytes, 1000u) << egress_dump();
  EXPECT_GE(server_events("tcp 127.0.0.2:").size(), 3u) << server_log();
}

// 3-5. A name off the list gets NXDOMAIN and a denied dns line; an address no rule allows is
// refused ("blocked loopback" in 127/8; "not-resolved" for an address no allowed name resolved
// to); an allowed name that resolves into a blocked range (DNS rebinding) does not resolve.
TEST_F(NetworkTest, DeniedNamesDirectAddressesAndRebindingAreRefused) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  std::vector<std::string> flags = good_only();
  flags.insert(flags.end(), {"--add-host", "rebind.test:127.0.0.5", "--allow-host", "rebind.test"});
  // 192.0.2.1 (TEST-NET-1) is not in a blocked range: only the allowlist refuses it, before any
  // connect (a refused connection never leaves the host).
  auto j = run_json(flags, program(R"PY(
check("denied-dns", lambda: resolve("denied.test"))
check("rebind-dns", lambda: resolve("rebind.test"))
check("good-dns", lambda: resolve("good.test"))
check("other-loopback", lambda: http_get("127.0.0.3", {{HTTP3}}, "good.test"))
check("rebind-target", lambda: http_get("127.0.0.5", 80, "rebind.test"))
check("not-resolved", lambda: http_get("192.0.2.1", 80, "good.test"))
check("allowed", lambda: http_get("127.0.0.2", {{HTTP}}, "good.test"))
)PY"));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("exit_code", -1), 0) << j.dump();
  auto c = checks_of(j.value("stdout", ""));
  EXPECT_TRUE(starts_with(c["denied-dns"], "error gaierror")) << c["denied-dns"];
  EXPECT_TRUE(starts_with(c["rebind-dns"], "error gaierror")) << c["rebind-dns"];
  EXPECT_EQ(c["good-dns"], "ok 127.0.0.2");
  EXPECT_TRUE(starts_with(c["other-loopback"], "error ConnectionResetError")) << c["other-loopback"];
  EXPECT_TRUE(starts_with(c["rebind-target"], "error ConnectionResetError")) << c["rebind-target"];
  EXPECT_TRUE(starts_with(c["not-resolved"], "error ConnectionResetError")) << c["not-resolved"];
  EXPECT_EQ(c["allowed"], "ok hello from 127.0.0.2");

  auto events = egress_events();
  auto denied = matching(events, {{"proto", "dns"}, {"name", "denied.test"}});
  ASSERT_EQ(denied.size(), 1u) << egress_dump();
  EXPECT_EQ(denied[0]["allowed"], false);
  EXPECT_EQ(denied[0]["rule"], "not-allowed");
  EXPECT_EQ(denied[0]["address"], "") << "a denied name is never resolved";
  auto rebind = matching(events, {{"proto", "dns"}, {"name", "rebind.test"}});
  ASSERT_EQ(rebind.size(), 1u) << egress_dump();
  EXPECT_EQ(rebind[0]["allowed"], false);
  EXPECT_EQ(rebind[0]["rule"], "blocked loopback");
  EXPECT_EQ(rebind[0]["address"], "127.0.0.5");
  EXPECT_EQ(
      matching(events, {{"proto", "tcp"}, {"address", "127.0.0.3"}, {"allowed", false}, {"rule", "blocked loopback"}})
          .size(),
      1u)
      << egress_dump();
  EXPECT_EQ(
      matching(events, {{"proto", "tcp"}, {"address", "127.0.0.5"}, {"allowed", false}, {"rule", "blocked loopback"}})
          .size(),
      1u)
      << egress_dump();
  EXPECT_EQ(
      matching(events,
               {{"proto", "tcp"}, {"address", "192.0.2.1"}, {"port", 80}, {"allowed", false}, {"rule", "not-resolved"}})
          .size(),
      1u)
      << egress_dump();
  EXPECT_TRUE(matching(events, {{"address", "127.0.0.3"}, {"allowed", true}}).empty()) << egress_dump();
  ASSERT_TRUE(j.contains("network")) << j.dump();
  EXPECT_EQ(j["network"].value("denied", 0), 5) << j["network"] << "\n" << egress_dump();
  // The refused connections never reached a server: only the allowed one did.
  EXPECT_TRUE(server_events("tcp 127.0.0.3:").empty()) << server_log();
  EXPECT_EQ(server_events("tcp 127.0.0.2:").size(), 1u) << server_log();
}

// 6. Under an allowlist the TLS SNI and the HTTP Host header on the wire must name an allowed
// host: a mismatch resets the connection (sni-mismatch / host-mismatch), matching ones work.
TEST_F(NetworkTest, SniAndHostHeaderMustNameAnAllowedHost) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  auto j = run_json(good_only(), program(R"PY(
check("host-good", lambda: http_get("127.0.0.2", {{HTTP}}, "good.test"))
check("host-good-with-port", lambda: http_get("127.0.0.2", {{HTTP}}, "good.test:{{HTTP}}"))
check("host-evil", lambda: http_get("127.0.0.2", {{HTTP}}, "evil.test"))
check("sni-good", lambda: tls_get("127.0.0.2", {{HTTPS}}, "good.test"))
check("sni-evil", lambda: tls_get("127.0.0.2", {{HTTPS}}, "evil.test"))
)PY"));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("exit_code", -1), 0) << j.dump();
  auto c = checks_of(j.value("stdout", ""));
  EXPECT_EQ(c["host-good"], "ok hello from 127.0.0.2");
  EXPECT_EQ(c["host-good-with-port"], "ok hello from 127.0.0.2");
  EXPECT_TRUE(starts_with(c["host-evil"], "error ConnectionResetError")) << c["host-evil"];
  EXPECT_EQ(c["sni-good"], "ok tls hello");
  EXPECT_TRUE(starts_with(c["sni-evil"], "error ")) << c["sni-evil"];

  auto events = egress_events();
  auto host = matching(events, {{"proto", "tcp"}, {"port", port("127.0.0.2", "http")}, {"allowed", false}});
  ASSERT_EQ(host.size(), 1u) << egress_dump();
  EXPECT_EQ(host[0]["rule"], "host-mismatch");
  EXPECT_EQ(host[0]["name"], "evil.test");
  EXPECT_EQ(host[0]["bytes_up"], 0) << "nothing of a refused request reaches the server";
  auto sni = matching(events, {{"proto", "tcp"}, {"port", port("127.0.0.2", "https")}, {"allowed", false}});
  ASSERT_EQ(sni.size(), 1u) << egress_dump();
  EXPECT_EQ(sni[0]["rule"], "sni-mismatch");
  EXPECT_EQ(sni[0]["name"], "evil.test");
  EXPECT_EQ(sni[0]["bytes_up"], 0);
  EXPECT_EQ(matching(events, {{"proto", "tcp"}, {"allowed", true}, {"name", "good.test"}}).size(), 3u) << egress_dump();
}

// 7. UDP other than DNS never leaves the guest; DNS goes to vial only: a query to another
// resolver over UDP gets no answer, over TCP port 53 it is refused ("dns-port").
TEST_F(NetworkTest, OnlyVialAnswersDnsAndOtherUdpIsDropped) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  auto j = run_json(good_only(), program(R"PY(
check("udp", lambda: send_udp("127.0.0.2", {{UDP}}))
check("udp-public", lambda: send_udp("127.0.0.3", {{UDP3}}))

def udp_dns(server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(DNS_QUERY, (server, 53))
    data, peer = s.recvfrom(512)
    return "answer from %s rcode %d answers %d" % (peer[0], data[3] & 15, struct.unpack("!H", data[6:8])[0])

def tcp_dns(server):
    with socket.create_connection((server, 53), timeout=10) as s:
        s.sendall(struct.pack("!H", len(DNS_QUERY)) + DNS_QUERY)
        data = s.recv(512)
        if not data:
            raise EOFError("closed")
        return "answer of %d bytes" % len(data)

check("udp-dns-other", lambda: udp_dns("127.0.0.2"))
check("tcp-dns-other", lambda: tcp_dns("127.0.0.2"))
check("udp-dns-vial", lambda: udp_dns("127.0.0.1"))
)PY"));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("exit_code", -1), 0) << j.dump();
  auto c = checks_of(j.value("stdout", ""));
  EXPECT_EQ(c["udp"], "ok sent");
  EXPECT_EQ(c["udp-public"], "ok sent");
  EXPECT_TRUE(starts_with(c["udp-dns-other"], "error ")) << c["udp-dns-other"];
  EXPECT_TRUE(starts_with(c["tcp-dns-other"], "error ")) << c["tcp-dns-other"];
  EXPECT_EQ(c["udp-dns-vial"], "ok answer from 127.0.0.1 rcode 0 answers 1") << "vial's resolver answers";

  auto events = egress_events();
  auto tcp53 = matching(events, {{"proto", "tcp"}, {"port", 53}});
  ASSERT_EQ(tcp53.size(), 1u) << egress_dump();
  EXPECT_EQ(tcp53[0]["address"], "127.0.0.2");
  EXPECT_EQ(tcp53[0]["allowed"], false);
  EXPECT_EQ(tcp53[0]["rule"], "dns-port") << "even an --allow-cidr address is refused on port 53";
  EXPECT_EQ(matching(events, {{"proto", "dns"}, {"name", "good.test"}, {"allowed", true}}).size(), 1u) << egress_dump();
  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(server_events("udp ").empty()) << server_log();
  EXPECT_TRUE(server_events("tcp ").empty()) << server_log();
}

// 8. Root in the guest (a machine's exec) cannot get around the policy: raw sockets and
// AF_PACKET stay in the guest, a source-bound connect to a refused address is still refused, and
// pointing resolv.conf at another resolver only breaks its own DNS. The machine's decisions
// are in `vial machine egress-events`.
TEST_F(NetworkMachineTest, GuestRootCannotBypassThePolicy) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  std::vector<std::string> create = {"machine", "create", "rooted"};
  auto policy = good_only();
  create.insert(create.end(), policy.begin(), policy.end());
  auto r = vial(create);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = vial({"machine", "start", "--name", "rooted"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();

  r = machine_exec("rooted", {"python3", "-c", program(R"PY(
check("uid", os.getuid)
check("ifaces", lambda: ",".join(name for _, name in socket.if_nameindex()))

def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff

def raw_icmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(2)
    pkt = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"vial"
    pkt = pkt[:2] + struct.pack("!H", checksum(pkt)) + pkt[4:]
    s.sendto(pkt, ("127.0.0.2", 0))
    return "sent"

def raw_udp(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    payload = b"raw from the guest"
    udp = struct.pack("!HHHH", 40000, {{UDP}}, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton("127.0.0.2"))
    s.sendto(ip + udp, ("127.0.0.2", 0))
    return "sent"

def af_packet():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("lo", 0))
    return s.send(b"\0" * 12 + b"\x08\x00" + b"x" * 40)

def bound_connect():
    s = socket.socket()
    s.settimeout(20)
    s.bind(("127.0.0.1", 0))
    s.connect(("127.0.0.3", {{HTTP3}}))
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: good.test\r\n\r\n")
    data = s.recv(100)
    if not data:
        raise EOFError("closed")
    return data

def resolve_fresh(name):
    # A new process reads resolv.conf afresh.
    r = subprocess.run([sys.executable, "-c", "import socket, sys; print(socket.gethostbyname(sys.argv[1]))", name],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    return r.stdout.strip()

check("raw-icmp", raw_icmp)
check("raw-udp", lambda: raw_udp("10.0.2.15"))
check("raw-udp-spoofed", lambda: raw_udp("127.0.0.1"))
check("af-packet", af_packet)
check("udp", lambda: send_udp("127.0.0.2", {{UDP}}))
check("direct-ip", lambda: http_get("127.0.0.3", {{HTTP3}}, "good.test"))
check("bound-connect", bound_connect)
check("denied-dns", lambda: resolve_fresh("denied.test"))
check("dns-before", lambda: resolve_fresh("good.test"))
original = open("/etc/resolv.conf").read()
with open("/etc/resolv.conf", "w") as f:
    f.write("nameserver 127.0.0.2\nnameserver 127.0.0.3\noptions timeout:1 attempts:1\n")
check("dns-elsewhere", lambda: resolve_fresh("good.test"))
with open("/etc/resolv.conf", "w") as f:
    f.write(original)
check("dns-after", lambda: resolve_fresh("good.test"))
check("allowed", lambda: http_get("good.test", {{HTTP}}, "good.test"))
)PY")});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  auto c = checks_of(r.out);
  EXPECT_EQ(c["uid"], "ok 0") << r.describe();
  EXPECT_EQ(c["ifaces"], "ok lo");
  EXPECT_EQ(c["raw-icmp"], "ok sent");
  EXPECT_EQ(c["raw-udp"], "ok sent");
  EXPECT_EQ(c["raw-udp-spoofed"], "ok sent");
  EXPECT_TRUE(starts_with(c["af-packet"], "ok ")) << c["af-packet"];
  EXPECT_EQ(c["udp"], "ok sent");
  EXPECT_TRUE(starts_with(c["direct-ip"], "error ConnectionResetError")) << c["direct-ip"];
  EXPECT_TRUE(starts_with(c["bound-connect"], "error ConnectionResetError")) << c["bound-connect"];
  EXPECT_TRUE(starts_with(c["denied-dns"], "error ")) << c["denied-dns"];
  EXPECT_EQ(c["dns-before"], "ok 127.0.0.2");
  EXPECT_TRUE(starts_with(c["dns-elsewhere"], "error ")) << "only vial answers DNS: " << c["dns-elsewhere"];
  EXPECT_EQ(c["dns-after"], "ok 127.0.0.2");
  EXPECT_EQ(c["allowed"], "ok hello from 127.0.0.2");

  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(server_events("udp ").empty()) << server_log();
  EXPECT_TRUE(server_events("tcp 127.0.0.3:").empty()) << server_log();
  EXPECT_EQ(server_events("tcp 127.0.0.2:").size(), 1u) << server_log();

  // The machine's own view of its decisions.
  r = vial({"machine", "egress-events", "rooted", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto listed = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(listed.is_array()) << r.describe();
  std::vector<json> events(listed.begin(), listed.end());
  EXPECT_FALSE(events.empty());
  for (const auto& e : events) EXPECT_EQ(e.value("machine", ""), "rooted") << e;
  EXPECT_EQ(
      matching(events, {{"proto", "tcp"}, {"address", "127.0.0.3"}, {"allowed", false}, {"rule", "blocked loopback"}})
          .size(),
      2u)
      << r.out;
  EXPECT_EQ(
      matching(events, {{"proto", "dns"}, {"name", "denied.test"}, {"allowed", false}, {"rule", "not-allowed"}}).size(),
      1u)
      << r.out;
  EXPECT_TRUE(matching(events, {{"address", "127.0.0.3"}, {"allowed", true}}).empty()) << r.out;
  EXPECT_EQ(matching(events, {{"proto", "tcp"}, {"address", "127.0.0.2"}, {"allowed", true}}).size(), 1u) << r.out;

  r = vial({"machine", "delete", "-f", "rooted"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
}

// 9. A published port reaches a guest server from the host, on 127.0.0.1 only by default; a
// host port in use makes `machine create` fail clearly and create nothing.
TEST_F(NetworkMachineTest, PublishedPortReachesTheGuestOnLoopbackOnly) {
  VIAL_REQUIRE_IMAGE("python");
  HostSocket busy(/*listen=*/true);
  ASSERT_NE(busy.port(), 0);
  const uint16_t host_port = free_port();
  const std::string hp = std::to_string(host_port);
  // An allowlist keeps the machine's egress to the test's own names.
  auto r = vial({"machine", "create", "web", "-p", hp + ":8000", "--add-host", "good.test:127.0.0.2", "--allow-host",
                 "good.test"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();

  // A host port taken by someone else: refused at create, nothing made.
  r = vial({"machine", "create", "clash", "-p", std::to_string(busy.port()) + ":8000"});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("already in use"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find(std::to_string(busy.port())), std::string::npos) << r.describe();
  EXPECT_EQ(machine_names(), std::vector<std::string>{"web"});

  r = vial({"machine", "status", "--name", "web", "--json"});
  auto status = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(status.is_object()) << r.describe();
  EXPECT_EQ(status["network"]["ports"], json::array({"127.0.0.1:" + hp + ":8000"})) << status;

  r = vial({"machine", "start", "--name", "web"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(listening_on(kLoopback, host_port)) << "the published port listens on 127.0.0.1";
  EXPECT_FALSE(listening_on(0, host_port)) << "not on every address by default";
  EXPECT_TRUE(host_connect_refused(kIp2, host_port)) << "nothing on 127.0.0.2:" << hp;

  // A port held by the running machine is in use too.
  r = vial({"machine", "create", "clash", "-p", hp + ":8001"});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("already in use"), std::string::npos) << r.describe();
  EXPECT_EQ(machine_names(), std::vector<std::string>{"web"});

  // The guest's server lives as long as its exec (a client's programs end when it disconnects).
  auto o = options();
  o.deadline = 600s;
  auto server =
      start_vial({"machine", "exec", "--name", "web", "--timeout", "10m", "--", "python3", "-u", "-c",
                  "import http.server, os\n"
                  "os.chdir('/tmp')\n"
                  "open('index.html', 'w').write('served from the guest\\n')\n"
                  "s = http.server.ThreadingHTTPServer(('0.0.0.0', 8000), http.server.SimpleHTTPRequestHandler)\n"
                  "print('listening', flush=True)\n"
                  "s.serve_forever()\n"},
                 o);
  ASSERT_TRUE(server->wait_for_stdout("listening", 120s)) << server->finish().describe();
  std::string response;
  EXPECT_TRUE(eventually(
      [&] {
        response = host_http_get(kLoopback, host_port, "/index.html");
        return response.find("served from the guest") != std::string::npos;
      },
      30s))
      << "GET http://127.0.0.1:" << hp << "/index.html answered: " << response;
  EXPECT_TRUE(starts_with(response, "HTTP/1.0 200")) << response;

  r = vial({"machine", "egress-events", "web", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto listed = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(listed.is_array()) << r.describe();
  std::vector<json> events(listed.begin(), listed.end());
  auto inbound = matching(events, {{"proto", "tcp-in"}, {"port", 8000}, {"machine", "web"}, {"allowed", true}});
  ASSERT_FALSE(inbound.empty()) << r.out;
  EXPECT_EQ(inbound.back()["rule"], "port 127.0.0.1:" + hp + ":8000");
  EXPECT_EQ(inbound.back()["address"], "127.0.0.1") << "the client's address";

  server.reset();  // disconnects: the guest's server is killed
  r = vial({"machine", "delete", "-f", "web"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(eventually([&] { return !listening_on(kLoopback, host_port); }, 10s)) << "the port outlived its machine";
  EXPECT_TRUE(machine_names().empty());
}

// 10. A guest opening 200 connections at once gets 128 (the per-VM limit): the rest are reset
// and logged "connection-limit", and the host process's descriptors stay bounded.
TEST_F(NetworkTest, ConnectionLimitBoundsHostDescriptors) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  std::vector<std::string> args = {"run", "-l", "python", "-t", "240"};
  auto policy = good_only();
  args.insert(args.end(), policy.begin(), policy.end());
  args.insert(args.end(), {"-c", program(R"PY(
print("baseline", flush=True)
time.sleep(3)
socks, refused = [], 0
for i in range(200):
    s = socket.socket()
    s.settimeout(60)
    try:
        s.connect(("127.0.0.2", {{HTTP}}))
        socks.append(s)
    except OSError:
        refused += 1
        s.close()
served = 0
for s in socks:
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: good.test\r\n\r\n")
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            served += 1
        else:
            refused += 1
    except OSError:
        refused += 1
print("holding %d %d" % (served, refused), flush=True)
time.sleep(5)
for s in socks:
    s.close()
print("closed", flush=True)
)PY")});
  auto o = options();
  o.deadline = 400s;
  auto p = start_vial(args, o);
  ASSERT_TRUE(p->wait_for_stdout("baseline\n", 180s)) << p->finish().describe();
  const size_t baseline = fd_count(p->pid());
  ASSERT_TRUE(p->wait_for_stdout("holding", 180s)) << p->finish().describe();
  const size_t peak = fd_count(p->pid());
  auto r = p->finish();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("holding (\\d+) (\\d+)"))) << r.describe();
  const int served = std::stoi(m[1]), refused = std::stoi(m[2]);
  EXPECT_EQ(served + refused, 200) << r.out;
  EXPECT_LE(served, 128) << "at most 128 connections per VM";
  EXPECT_GE(served, 100) << "connections under the limit are served: " << r.out;
  EXPECT_NE(r.out.find("closed"), std::string::npos) << r.describe();
  // The gateway's sockets are vial's descriptors: 128 at most, plus vial's own few.
  EXPECT_LE(peak, 128u + 40u) << "descriptors of vial while the guest held 200 connections (baseline " << baseline
                              << ")";
  EXPECT_GE(peak, baseline + 100) << "the held connections are vial's sockets (baseline " << baseline << ")";

  auto events = egress_events();
  auto limited = matching(events, {{"proto", "tcp"}, {"allowed", false}, {"rule", "connection-limit"}});
  EXPECT_GE(limited.size(), 200u - 128u) << egress_dump();
  EXPECT_EQ(static_cast<int>(limited.size()), refused) << "each refused connection is logged once";
  EXPECT_LE(server_events("tcp 127.0.0.2:").size(), 128u) << "the server never saw more than the limit";
}

// 11. A VM destroyed mid-download (a run's timeout; a session deleted) leaves no host socket
// open: checked on a long-lived `vial serve`, whose process outlives the VMs. The session's
// JSON has its network, and its published port goes with it.
TEST_F(NetworkTest, VmDestroyedMidDownloadLeavesNoHostSocket) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  start_daemon();
  if (HasFatalFailure()) return;
  const uint16_t http = port("127.0.0.2", "http");
  const std::string download = program(R"PY(
s = socket.create_connection(("127.0.0.2", {{HTTP}}), timeout=60)
s.sendall(b"GET /big?mib=2000 HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n")
got = 0
while got < (1 << 20):
    got += len(s.recv(65536))
print("downloading", flush=True)
while True:  # slowly: the host side stays blocked on the guest's window
    got += len(s.recv(4096))
    time.sleep(0.05)
)PY");
  auto o = options();
  o.deadline = 400s;

  // A run through the daemon that times out while downloading.
  auto run = start_vial({"run", "-l", "python", "-t", "10", "--allow-cidr", "127.0.0.2/32", "-c", download}, o);
  ASSERT_TRUE(run->wait_for_stdout("downloading", 180s)) << run->finish().describe();
  EXPECT_GE(established_with(kIp2, http), 1) << "the download's connection is up";
  auto r = run->finish();
  EXPECT_EQ(r.exit_code, 124) << r.describe();
  EXPECT_TRUE(eventually([&] { return established_with(kIp2, http) == 0; }, 10s))
      << established_with(kIp2, http) << " connection(s) to the test server outlived the run's VM";
  EXPECT_TRUE(daemon_->pump_for(10ms)) << "the daemon is still up";

  // A session deleted while downloading.
  const uint16_t published = free_port();
  r = vial({"session", "create", "-l", "python", "--json", "--allow-cidr", "127.0.0.2/32", "-p",
            std::to_string(published) + ":8000"},
           o);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto session = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(session.is_object() && session.contains("id")) << r.describe();
  const std::string id = session["id"];
  ASSERT_TRUE(session.contains("network")) << session;
  EXPECT_EQ(session["network"].value("enabled", false), true) << session;
  EXPECT_EQ(session["network"]["allow_cidrs"], json::array({"127.0.0.2/32"})) << session;
  EXPECT_EQ(session["network"]["ports"], json::array({"127.0.0.1:" + std::to_string(published) + ":8000"})) << session;
  EXPECT_TRUE(listening_on(kLoopback, published));

  auto exec = start_vial({"session", "exec", id, "-t", "300", "-c", download}, o);
  ASSERT_TRUE(exec->wait_for_stdout("downloading", 180s)) << exec->finish().describe();
  EXPECT_GE(established_with(kIp2, http), 1);
  r = vial({"session", "rm", id});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  r = exec->finish();
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(eventually([&] { return established_with(kIp2, http) == 0; }, 10s))
      << established_with(kIp2, http) << " connection(s) to the test server outlived the session's VM";
  EXPECT_TRUE(eventually([&] { return !listening_on(kLoopback, published); }, 10s)) << "the session's port outlived it";

  // Both streams were logged as ended with their VM, after more than the first MiB, by the
  // daemon (its VMs are named after its pid): the host side outlived the VMs, so the check above
  // is about the gateway closing its sockets, not about a process exiting.
  auto ended = egress_events();
  size_t with_vm = 0;
  for (const auto& e : matching(ended, {{"proto", "tcp"}, {"port", http}, {"allowed", true}})) {
    if (e.value("rule", "").find("ended with the VM") != std::string::npos) {
      ++with_vm;
      EXPECT_GE(e["bytes_down"].get<uint64_t>(), 1u << 20) << e;
      EXPECT_TRUE(starts_with(e.value("vm", ""), "vm-" + std::to_string(daemon_->pid()) + "-"))
          << "not a VM of the daemon: " << e;
    }
  }
  EXPECT_EQ(with_vm, 2u) << egress_dump();

  // A bad flag through the daemon: exit 2, the flag named, no session.
  r = vial({"session", "create", "-l", "python", "--allow-cidr", "10.0.0.1/8"});
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_NE(r.err.find("--allow-cidr"), std::string::npos) << r.describe();
  r = vial({"session", "ls", "--json"});
  EXPECT_EQ(json::parse(r.out, nullptr, false), json::array()) << r.describe();
  stop_daemon();
}

// 12. Two VMs at once, with different policies: each reaches only what its own policy allows.
TEST_F(NetworkTest, ConcurrentVmsKeepTheirOwnPolicies) {
  VIAL_REQUIRE_IMAGE("python");
  start_server();
  if (HasFatalFailure() || IsSkipped()) return;
  const std::string code = program(R"PY(
for i in range(4):
    check("good-dns-%d" % i, lambda: resolve("good.test"))
    check("other-dns-%d" % i, lambda: resolve("other.test"))
    check("good-http-%d" % i, lambda: http_get("127.0.0.2", {{HTTP}}, "good.test"))
    check("other-http-%d" % i, lambda: http_get("127.0.0.3", {{HTTP3}}, "other.test"))
    time.sleep(1)
)PY");
  auto o = options();
  o.deadline = 400s;
  auto a = start_vial({"run", "-l", "python", "--json", "--allow-cidr", "127.0.0.2/32", "--add-host",
                       "good.test:127.0.0.2", "--allow-host", "good.test", "-c", code},
                      o);
  auto b = start_vial({"run", "-l", "python", "--json", "--allow-cidr", "127.0.0.3/32", "--add-host",
                       "other.test:127.0.0.3", "--allow-host", "other.test", "-c", code},
                      o);
  // Drain both while they run (neither blocks on a full pipe), then collect.
  auto ra = a->finish();
  auto rb = b->finish();
  auto ja = json::parse(ra.out, nullptr, false), jb = json::parse(rb.out, nullptr, false);
  ASSERT_TRUE(ja.is_object()) << ra.describe();
  ASSERT_TRUE(jb.is_object()) << rb.describe();
  EXPECT_EQ(ja.value("exit_code", -1), 0) << ja.dump();
  EXPECT_EQ(jb.value("exit_code", -1), 0) << jb.dump();
  auto ca = checks_of(ja.value("stdout", "")), cb = checks_of(jb.value("stdout", ""));
  for (int i = 0; i < 4; ++i) {
    const std::string n = std::to_string(i);
    EXPECT_EQ(ca["good-dns-" + n], "ok 127.0.0.2") << "A round " << n;
    EXPECT_TRUE(starts_with(ca["other-dns-" + n], "error gaierror")) << "A round " << n << ": " << ca["other-dns-" + n];
    EXPECT_EQ(ca["good-http-" + n], "ok hello from 127.0.0.2") << "A round " << n;
    EXPECT_TRUE(starts_with(ca["other-http-" + n], "error ConnectionResetError"))
        << "A round " << n << ": " << ca["other-http-" + n];
    EXPECT_TRUE(starts_with(cb["good-dns-" + n], "error gaierror")) << "B round " << n << ": " << cb["good-dns-" + n];
    EXPECT_EQ(cb["other-dns-" + n], "ok 127.0.0.3") << "B round " << n;
    EXPECT_TRUE(starts_with(cb["good-http-" + n], "error ConnectionResetError"))
        << "B round " << n << ": " << cb["good-http-" + n];
    EXPECT_EQ(cb["other-http-" + n], "ok hello from 127.0.0.3") << "B round " << n;
  }

  // Per VM in the log: what was allowed is its own name and address only.
  std::map<std::string, std::vector<json>> by_vm;
  for (const auto& e : egress_events()) by_vm[e.value("vm", "")].push_back(e);
  ASSERT_EQ(by_vm.size(), 2u) << egress_dump();
  int saw_a = 0, saw_b = 0;
  for (const auto& [vm, events] : by_vm) {
    const bool is_a = !matching(events, {{"name", "good.test"}, {"allowed", true}}).empty();
    (is_a ? saw_a : saw_b)++;
    const std::string own_ip = is_a ? "127.0.0.2" : "127.0.0.3";
    const std::string own_name = is_a ? "good.test" : "other.test";
    for (const auto& e : matching(events, {{"allowed", true}})) {
      EXPECT_EQ(e.value("address", ""), own_ip) << vm << ": " << e;
      EXPECT_EQ(e.value("name", ""), own_name) << vm << ": " << e;
    }
    EXPECT_EQ(matching(events, {{"proto", "tcp"}, {"allowed", true}}).size(), 4u) << vm << "\n" << egress_dump();
    EXPECT_EQ(matching(events, {{"proto", "tcp"}, {"allowed", false}}).size(), 4u) << vm << "\n" << egress_dump();
  }
  EXPECT_EQ(saw_a, 1);
  EXPECT_EQ(saw_b, 1);
  // Each server address was reached only by the VM allowed to.
  EXPECT_EQ(server_events("tcp 127.0.0.2:").size(), 4u) << server_log();
  EXPECT_EQ(server_events("tcp 127.0.0.3:").size(), 4u) << server_log();
}

// 13. Bad network flags: exit 2 with the flag named, before any VM, and nothing created.
TEST_F(NetworkTest, BadFlagsExitTwoNameTheFlagAndCreateNothing) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--allow-cidr", "10.0.0.1/8"}, "--allow-cidr"},        // host bits set
      {{"--allow-cidr", "10.0.0.0/33"}, "--allow-cidr"},       // prefix too long
      {{"--allow-cidr", "300.1.2.3"}, "--allow-cidr"},         // not an address
      {{"--allow-cidr", "example.com"}, "--allow-cidr"},       // a name
      {{"--allow-host", "*"}, "--allow-host"},                 // bare wildcard
      {{"--allow-host", "*."}, "--allow-host"},                // bare wildcard too
      {{"--allow-host", "a.*.example.com"}, "--allow-host"},   // wildcard not the first label
      {{"--allow-host", "foo*.example.com"}, "--allow-host"},  // wildcard not the whole label
      {{"--allow-host", "1.2.3.4"}, "--allow-host"},           // an address
      {{"--allow-host", "bad name.test"}, "--allow-host"},     // not a name
      {{"--add-host", "db.test"}, "--add-host"},               // no IP
      {{"--add-host", "db.test:999.1.1.1"}, "--add-host"},     // not an IPv4 address
      {{"--add-host", "db.test:other.test"}, "--add-host"},    // a name, not an IP
      {{"--add-host", "1.2.3.4:1.2.3.4"}, "--add-host"},       // an address as the name
  };
  const std::vector<std::pair<std::vector<std::string>, std::string>> port_cases = {
      {{"-p", "0:8000"}, "--port"},                       // host port 0
      {{"-p", "65536:8000"}, "--port"},                   // host port too large
      {{"-p", "8080:0"}, "--port"},                       // guest port 0
      {{"-p", "8080:65536"}, "--port"},                   // guest port too large
      {{"-p", "1.2.3:8080:80"}, "--port"},                // not an address
      {{"-p", "localhost:8080:80"}, "--port"},            // a name, not an address
      {{"-p", "8080"}, "--port"},                         // no guest port
      {{"-p", "18080:80", "-p", "18080:81"}, "--port"},  // one host port twice
  };
  auto expect_refused = [&](const std::vector<std::string>& args, const std::string& flag) {
    auto r = vial(args);
    std::string shown;
    for (const auto& a : args) shown += a + " ";
    EXPECT_EQ(r.exit_code, 2) << shown << "\n" << r.describe();
    EXPECT_NE(r.err.find(flag), std::string::npos) << shown << ": the message names " << flag << "\n" << r.describe();
    EXPECT_LT(r.seconds, 10) << shown << ": refused before any VM";
  };
  for (const auto& [flags, flag] : cases) {
    std::vector<std::string> run = {"run", "-l", "python"};
    run.insert(run.end(), flags.begin(), flags.end());
    run.insert(run.end(), {"-c", "print(1)"});
    expect_refused(run, flag);
    std::vector<std::string> create = {"machine", "create", "bad"};
    create.insert(create.end(), flags.begin(), flags.end());
    expect_refused(create, flag);
  }
  for (const auto& [flags, flag] : port_cases) {
    std::vector<std::string> create = {"machine", "create", "bad"};
    create.insert(create.end(), flags.begin(), flags.end());
    expect_refused(create, flag);
  }
  EXPECT_TRUE(machine_names().empty());
  std::error_code ec;
  EXPECT_TRUE(dir_entries(home() / "machines").empty()) << "no machine folder is left";
  EXPECT_FALSE(fs::exists(home() / "logs" / "egress.ndjson", ec)) << egress_dump();
  EXPECT_TRUE(qemu_pids_containing(home().string() + "/").empty());
}

// Network flags take one value each, like every repeatable flag: `--allow-host NAME FILE` must
// run FILE, not allow a host named FILE (it once did: "code is empty", exit 2).
TEST_F(NetworkTest, NetworkFlagsDoNotSwallowTheCodeFile) {
  VIAL_REQUIRE_IMAGE("python");
  const fs::path file = home() / "prog.py";
  std::ofstream(file) << "import socket\nprint(socket.gethostbyname('good.test'))\n";
  auto r = vial({"run", "-l", "python", "--add-host", "good.test:127.0.0.2", "--allow-cidr", "127.0.0.2/32",
                 "--allow-host", "good.test", file.string()});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "127.0.0.2\n") << r.describe();
}

}  // namespace
}  // namespace vial::test
