// The server's pure parts: routing, request parsing, base64, metrics text, and the OpenAPI
// document checked against the routes the server really serves.
#include <fstream>
#include <set>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sandbox/run_json.h"
#include "server/api.h"
#include "server/exchange.h"
#include "server/metrics.h"
#include "server/router.h"
#include "util/base64.h"
#include "util/error.h"

namespace vial::server {
namespace {

Router test_router() {
  Router r;
  auto nop = [](Exchange&) -> asio::awaitable<void> { co_return; };
  r.add({"GET", "/v1/sessions/{id}", nop});
  r.add({"DELETE", "/v1/sessions/{id}", nop});
  r.add({"PUT", "/v1/sessions/{id}/files/{path...}", nop});
  return r;
}

TEST(Router, MatchesParamsAndRest) {
  Router r = test_router();
  auto m = r.match("PUT", "/v1/sessions/abc/files/dir/a%20b.txt");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params["id"], "abc");
  EXPECT_EQ(m.params["path"], "dir/a b.txt");
  m = r.match("GET", "/v1/sessions/abc");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params["id"], "abc");
}

TEST(Router, RestKeepsTraversalForThePathPolicy) {
  auto m = test_router().match("PUT", "/v1/sessions/x/files/../../etc/passwd");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params["path"], "../../etc/passwd");
  m = test_router().match("PUT", "/v1/sessions/x/files//etc/passwd");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params["path"], "/etc/passwd");  // absolute: the path policy refuses it
}

TEST(Router, UnknownPathAndWrongMethod) {
  Router r = test_router();
  auto m = r.match("GET", "/v1/nope");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_TRUE(m.allowed.empty());
  m = r.match("POST", "/v1/sessions/abc");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allowed, (std::vector<std::string>{"GET", "DELETE"}));
  EXPECT_EQ(r.match("GET", "/v1/sessions/abc/extra").route, nullptr);
  EXPECT_EQ(r.match("PUT", "/v1/sessions/abc/files").route, nullptr);
}

TEST(PercentDecode, DecodesAndLeavesBadEscapes) {
  EXPECT_EQ(percent_decode("a%2Fb%20c"), "a/b c");
  EXPECT_EQ(percent_decode("100%"), "100%");
  EXPECT_EQ(percent_decode("%zz+"), "%zz+");
}

TEST(Base64, RoundTripsBinary) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t n : {0u, 1u, 2u, 3u, 4u, 255u, 256u}) {
    std::string s = all.substr(0, n);
    EXPECT_EQ(base64_decode(base64_encode(s)), s) << n;
  }
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");
  EXPECT_THROW(base64_decode("abc"), Error);
  EXPECT_THROW(base64_decode("ab!="), Error);
  EXPECT_THROW(base64_decode("a=bc"), Error);
}

TEST(RunJson, ParsesAndNamesBadFields) {
  auto r = run_request_from_json({{"language", "python"}, {"code", "print(1)"}, {"env", {{"A", "b"}}}, {"timeout", 5}}, 256);
  EXPECT_EQ(r.language, "python");
  EXPECT_EQ(r.env.at("A"), "b");
  EXPECT_EQ(r.timeout.count(), 5);
  EXPECT_EQ(r.memory_mib, 256u);
  auto fails_naming = [](const nlohmann::json& body, const std::string& field) {
    try {
      run_request_from_json(body, 256);
      ADD_FAILURE() << "accepted " << body.dump();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  fails_naming({{"code", "x"}}, "language");
  fails_naming({{"language", "python"}, {"code", "x"}, {"timeout", "5"}}, "timeout");
  fails_naming({{"language", "python"}, {"code", "x"}, {"timeout", 0}}, "timeout");
  fails_naming({{"language", "python"}, {"code", "x"}, {"bogus", 1}}, "bogus");
  fails_naming({{"language", "python"}, {"code", "x"}, {"env", {{"A", 1}}}}, "env");
  fails_naming({{"language", "python"}, {"argv", "ls"}}, "argv");
  fails_naming({{"language", "cobol"}, {"code", "x"}}, "cobol");
  fails_naming(nlohmann::json::array(), "object");
}

TEST(RunJson, RequestAndResultRoundTrip) {
  RunRequest req = run_request_from_json({{"language", "shell"}, {"argv", {"ls", "-l"}}, {"stdin", "x"}}, 128);
  auto again = run_request_from_json(run_request_to_json(req), 999);
  EXPECT_EQ(again.argv, req.argv);
  EXPECT_EQ(again.stdin_data, req.stdin_data);
  EXPECT_EQ(again.memory_mib, 128u);
  RunResult res;
  res.stdout_data = "out";
  res.exit_code = 3;
  res.signal = 9;
  res.timing.exec_ms = 1.5;
  auto back = run_result_from_json(run_result_to_json(res, "tcg"));
  EXPECT_EQ(back.stdout_data, "out");
  EXPECT_EQ(back.exit_code, 3);
  EXPECT_EQ(back.signal, 9);
  EXPECT_DOUBLE_EQ(back.timing.exec_ms, 1.5);
  EXPECT_FALSE(run_result_to_json(res, "tcg", false).contains("stdout"));
}

TEST(ErrorReply, MapsKindsToStatuses) {
  EXPECT_EQ(error_reply(Error(ErrorKind::invalid_input, "x")).status, http::status::bad_request);
  EXPECT_EQ(error_reply(Error(ErrorKind::not_found, "x")).status, http::status::not_found);
  EXPECT_EQ(error_reply(Error(ErrorKind::conflict, "x")).status, http::status::conflict);
  auto capacity = error_reply(Error(ErrorKind::capacity, "full"));
  EXPECT_EQ(capacity.status, http::status::service_unavailable);
  EXPECT_EQ(capacity.retry_after_s, 1);
  EXPECT_EQ(error_reply(Error(ErrorKind::timeout, "x")).status, http::status::gateway_timeout);
  EXPECT_EQ(error_reply(std::runtime_error("boom")).code, "internal");
  EXPECT_EQ(error_body(capacity)["error"]["message"], "full");
}

TEST(Metrics, RendersPrometheusText) {
  Metrics m;
  m.request_done("/v1/run", 200);
  m.error("capacity");
  m.exec_observed("python", 0.02);
  EngineGauges g;
  g.live_vms = 3;
  g.pooled = {{"python", 2}};
  std::string text = m.render(g);
  EXPECT_NE(text.find("vial_sandboxes{state=\"pooled\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("vial_sandboxes{state=\"in_use\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("vial_http_requests_total{route=\"/v1/run\",status=\"200\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("vial_errors_total{kind=\"capacity\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("vial_exec_duration_seconds_bucket{language=\"python\",le=\"0.025\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("vial_exec_duration_seconds_bucket{language=\"python\",le=\"0.01\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("vial_exec_duration_seconds_count{language=\"python\"} 1\n"), std::string::npos);
}

TEST(OpenApi, DocumentsExactlyTheServedRoutes) {
  std::ifstream in(std::string(VIAL_TEST_SOURCE_DIR) + "/docs/openapi.json");
  ASSERT_TRUE(in) << "docs/openapi.json missing";
  auto spec = nlohmann::json::parse(in);
  std::set<std::string> documented;
  for (const auto& [path, ops] : spec["paths"].items()) {
    for (const auto& [method, op] : ops.items()) {
      if (method == "parameters") continue;
      std::string upper = method;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(upper + " " + path);
    }
  }
  boost::asio::io_context io;
  Api api(VmManager::create(io.get_executor(), {}), {});
  std::set<std::string> served;
  for (const Route& r : api.router().routes()) served.insert(r.method + " " + openapi_path(r.pattern));
  EXPECT_EQ(documented, served);
}

}  // namespace
}  // namespace vial::server
