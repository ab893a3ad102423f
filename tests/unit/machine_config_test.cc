// Smolfile/Vialfile parsing, names and durations: what `vial machine create/exec` accept.
#include <gtest/gtest.h>

#include "machine/duration.h"
#include "machine/machine_config.h"
#include "machine/machine_name.h"
#include "util/error.h"

namespace vial::machine {
namespace {

// The message of the Error(invalid_input) that parsing `toml` throws.
std::string config_error(const std::string& toml) {
  try {
    parse_machine_config(toml, "Smolfile");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
    return e.what();
  }
  ADD_FAILURE() << "no error for:\n" << toml;
  return {};
}

TEST(MachineConfig, ParsesEverySmolfileKey) {
  MachineConfig c = parse_machine_config(R"(
cpus = 2
memory = 1024
env = ["A=1", "B=x=y", "A=2"]
workdir = "/srv"
init = ["mkdir -p /srv", "echo hi"]
net = false
[network]
allow_hosts = []
allow_cidrs = []
)",
                                         "Smolfile");
  EXPECT_EQ(c.cpus, 2u);
  EXPECT_EQ(c.memory_mib, 1024u);
  EXPECT_EQ(c.env, (std::map<std::string, std::string>{{"A", "2"}, {"B", "x=y"}}));
  EXPECT_EQ(c.workdir, "/srv");
  EXPECT_EQ(c.init, (std::vector<std::string>{"mkdir -p /srv", "echo hi"}));
  EXPECT_FALSE(net::make_policy(c.network).enabled);
}

TEST(MachineConfig, EmptyFileGivesDefaults) {
  MachineConfig c = parse_machine_config("", "Smolfile");
  EXPECT_EQ(c.cpus, 1u);
  EXPECT_EQ(c.memory_mib, kDefaultMachineMemoryMib);
  EXPECT_TRUE(c.init.empty());
}

TEST(MachineConfig, NetworkRequests) {
  auto enabled = [](const char* toml) { return net::make_policy(parse_machine_config(toml, "f").network).enabled; };
  EXPECT_TRUE(enabled("net = true"));
  EXPECT_TRUE(enabled("[network]\nallow_hosts = [\"pypi.org\"]"));
  EXPECT_TRUE(enabled("[network]\nallow_cidrs = [\"10.0.0.0/8\"]"));
  EXPECT_TRUE(enabled("ports = [\"8080:80\"]"));
  MachineConfig c = parse_machine_config("ports = [\"127.0.0.1:8080:80\"]\n[network]\nadd_hosts = [\"pypi.test:127.0.0.2\"]", "f");
  EXPECT_EQ(c.network.ports, std::vector<std::string>{"127.0.0.1:8080:80"});
  EXPECT_EQ(c.network.add_hosts, std::vector<std::string>{"pypi.test:127.0.0.2"});
}

TEST(MachineConfig, ErrorsNameTheKey) {
  EXPECT_NE(config_error("cpu = 2").find("key 'cpu': unknown key"), std::string::npos);
  EXPECT_NE(config_error("cpus = 0").find("key 'cpus'"), std::string::npos);
  EXPECT_NE(config_error("cpus = \"two\"").find("key 'cpus'"), std::string::npos);
  EXPECT_NE(config_error("memory = 16").find("key 'memory'"), std::string::npos);
  EXPECT_NE(config_error("env = \"A=1\"").find("key 'env'"), std::string::npos);
  EXPECT_NE(config_error("env = [\"=1\"]").find("key 'env'"), std::string::npos);
  EXPECT_NE(config_error("env = [\"NOEQUALS\"]").find("NOEQUALS"), std::string::npos);
  EXPECT_NE(config_error("workdir = \"relative\"").find("key 'workdir'"), std::string::npos);
  EXPECT_NE(config_error("init = [1]").find("key 'init'"), std::string::npos);
  EXPECT_NE(config_error("net = \"yes\"").find("key 'net'"), std::string::npos);
  EXPECT_NE(config_error("[network]\nallow = []").find("key 'network.allow'"), std::string::npos);
  EXPECT_NE(config_error("cpus = [").find("not valid TOML"), std::string::npos);
}

TEST(MachineConfig, VolumesAreRejectedNotIgnoredAndBadNetworkValuesNamed) {
  EXPECT_NE(config_error("volumes = [\"/a:/b:ro\"]").find("key 'volumes': volumes are not supported yet"),
            std::string::npos);
  EXPECT_NE(config_error("volumes = [\"nocolon\"]").find("HOST:GUEST[:ro]"), std::string::npos);
  EXPECT_NE(config_error("ports = [\"0:80\"]").find("0:80"), std::string::npos);
  EXPECT_NE(config_error("[network]\nallow_cidrs = [\"10.0.0/8\"]").find("10.0.0/8"), std::string::npos);
  EXPECT_NO_THROW(parse_machine_config("volumes = []\nports = []", "f"));
}

TEST(MachineConfig, JsonRoundTrip) {
  MachineConfig c = parse_machine_config("cpus = 3\nenv = [\"K=V\"]\ninit = [\"true\"]\nnet = true", "f");
  MachineConfig back = nlohmann::json(c).get<MachineConfig>();
  EXPECT_EQ(back.cpus, 3u);
  EXPECT_EQ(back.env.at("K"), "V");
  EXPECT_EQ(back.init, c.init);
  EXPECT_TRUE(back.network.net);
}

TEST(MachineName, AcceptsTheSmolvmAlphabet) {
  for (const char* ok : {"a", "agent-xyz", "0", "a.b_c-d", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"}) {
    EXPECT_NO_THROW(validate_name(ok)) << ok;
  }
  for (const char* bad : {"", "-a", ".a", "_a", "A", "a b", "a/b", "../x", "a:b",
                          "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234"}) {
    try {
      validate_name(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
      EXPECT_NE(std::string(e.what()).find("invalid name"), std::string::npos);
    }
  }
}

TEST(Duration, SecondsMinutesHours) {
  using namespace std::chrono_literals;
  EXPECT_EQ(parse_duration("30", "--timeout"), 30s);
  EXPECT_EQ(parse_duration("30s", "--timeout"), 30s);
  EXPECT_EQ(parse_duration("2m", "--timeout"), 120s);
  EXPECT_EQ(parse_duration("1h", "--timeout"), 3600s);
  for (const char* bad : {"", "0", "0s", "s", "-1", "1.5", "10ms", "1d", "3x", "99999999999"}) {
    EXPECT_THROW(parse_duration(bad, "--timeout"), Error) << bad;
  }
}

}  // namespace
}  // namespace vial::machine
