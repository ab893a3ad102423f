#include "guest/net_setup.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

namespace vial::guest {

namespace {

std::string errno_text(const std::string& what, int err = errno) { return what + ": " + strerror(err); }

// ---- rtnetlink: one request, one acknowledgement ----

void add_attr(std::vector<char>& msg, uint16_t type, const void* data, size_t len) {
  rtattr a{};
  a.rta_type = type;
  a.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  size_t at = msg.size();
  msg.resize(at + RTA_SPACE(len), 0);
  std::memcpy(msg.data() + at, &a, sizeof a);
  std::memcpy(msg.data() + at + RTA_LENGTH(0), data, len);
}

// `body` is the family header (ifaddrmsg/rtmsg) followed by attributes.
std::string netlink_request(uint16_t type, const std::vector<char>& body) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) return errno_text("netlink socket");
  std::vector<char> msg(NLMSG_HDRLEN, 0);
  msg.insert(msg.end(), body.begin(), body.end());
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(msg.size());
  h.nlmsg_type = type;
  h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
  h.nlmsg_seq = 1;
  std::memcpy(msg.data(), &h, sizeof h);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::string result;
  if (sendto(s, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    result = errno_text("netlink send");
  } else {
    alignas(nlmsghdr) char buf[4096];
    ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n < 0) {
      result = errno_text("netlink receive");
    } else if (static_cast<size_t>(n) >= NLMSG_HDRLEN + sizeof(nlmsgerr)) {
      auto* reply = reinterpret_cast<nlmsghdr*>(buf);
      auto* err = static_cast<nlmsgerr*>(NLMSG_DATA(reply));
      if (reply->nlmsg_type == NLMSG_ERROR && err->error != 0) result = errno_text("netlink", -err->error);
    }
  }
  close(s);
  return result;
}

template <typename Header>
std::vector<char> header_bytes(const Header& h) {
  std::vector<char> out(NLMSG_ALIGN(sizeof h), 0);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

std::string add_address(unsigned lo) {
  ifaddrmsg a{};
  a.ifa_family = AF_INET;
  a.ifa_prefixlen = 32;
  a.ifa_scope = RT_SCOPE_UNIVERSE;
  a.ifa_index = lo;
  auto msg = header_bytes(a);
  in_addr addr{};
  inet_pton(AF_INET, kGuestAddress, &addr);
  add_attr(msg, IFA_LOCAL, &addr, sizeof addr);
  add_attr(msg, IFA_ADDRESS, &addr, sizeof addr);
  return netlink_request(RTM_NEWADDR, msg);
}

// `ip route add local 0.0.0.0/0 dev lo table local`
std::string add_anyip_route(unsigned lo) {
  rtmsg r{};
  r.rtm_family = AF_INET;
  r.rtm_dst_len = 0;
  r.rtm_table = RT_TABLE_LOCAL;
  r.rtm_protocol = RTPROT_BOOT;
  r.rtm_scope = RT_SCOPE_HOST;
  r.rtm_type = RTN_LOCAL;
  auto msg = header_bytes(r);
  uint32_t oif = lo;
  add_attr(msg, RTA_OIF, &oif, sizeof oif);
  return netlink_request(RTM_NEWROUTE, msg);
}

// ---- BPF ----

long bpf(int cmd, bpf_attr& attr) { return syscall(__NR_bpf, cmd, &attr, sizeof attr); }

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

// The sk_lookup program, by hand (no compiler for BPF in the image build): for TCP over IPv4
// to anything but 127.0.0.1, look up the listener in sockmap[0] and assign the connection to
// it. Everything else takes the normal path (SK_PASS without an assignment).
std::vector<bpf_insn> steering_program(int map_fd) {
  constexpr uint8_t r0 = 0, r1 = 1, r2 = 2, r3 = 3, r6 = 6, r7 = 7, r10 = 10;
  constexpr int16_t pass = 21;  // index of the final "r0 = SK_PASS"
  auto field = [](size_t offset) { return static_cast<int16_t>(offset); };
  std::vector<bpf_insn> p;
  auto jump_to_pass = [&](uint8_t op, uint8_t reg, int32_t imm) {
    p.push_back(insn(BPF_JMP | op | BPF_K, reg, 0, static_cast<int16_t>(pass - static_cast<int16_t>(p.size()) - 1), imm));
  };
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, r6, r1, 0, 0));                                        // 0
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, r2, r6, field(offsetof(bpf_sk_lookup, protocol)), 0));  // 1
  jump_to_pass(BPF_JNE, r2, IPPROTO_TCP);                                                              // 2
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, r2, r6, field(offsetof(bpf_sk_lookup, family)), 0));    // 3
  jump_to_pass(BPF_JNE, r2, AF_INET);                                                                  // 4
  p.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, r2, r6, field(offsetof(bpf_sk_lookup, local_ip4)), 0));  // 5
  jump_to_pass(BPF_JEQ, r2, static_cast<int32_t>(htonl(INADDR_LOOPBACK)));                             // 6
  p.push_back(insn(BPF_ST | BPF_MEM | BPF_W, r10, 0, -4, 0));                                          // 7: key 0
  p.push_back(insn(BPF_LD | BPF_DW | BPF_IMM, r1, BPF_PSEUDO_MAP_FD, 0, map_fd));                      // 8
  p.push_back(insn(0, 0, 0, 0, 0));                                                                    // 9
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, r2, r10, 0, 0));                                       // 10
  p.push_back(insn(BPF_ALU64 | BPF_ADD | BPF_K, r2, 0, 0, -4));                                        // 11
  p.push_back(insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem));                            // 12
  jump_to_pass(BPF_JEQ, r0, 0);                                                                        // 13
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, r7, r0, 0, 0));                                        // 14
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, r1, r6, 0, 0));                                        // 15
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, r2, r7, 0, 0));                                        // 16
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, r3, 0, 0, 0));                                         // 17
  p.push_back(insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_assign));                                  // 18
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_X, r1, r7, 0, 0));                                        // 19
  p.push_back(insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_release));                                 // 20
  p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, r0, 0, 0, SK_PASS));                                   // 21 = pass
  p.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));                                                   // 22
  return p;
}

}  // namespace

std::string attach_steering(int& map_fd) {
  bpf_attr attr{};
  attr.map_type = BPF_MAP_TYPE_SOCKMAP;
  attr.key_size = 4;
  attr.value_size = 8;
  attr.max_entries = 1;
  int map = static_cast<int>(bpf(BPF_MAP_CREATE, attr));
  if (map < 0) return errno_text("bpf map create");

  auto program = steering_program(map);
  static char license[] = "GPL";
  static char log[8192];
  attr = {};
  attr.prog_type = BPF_PROG_TYPE_SK_LOOKUP;
  attr.expected_attach_type = BPF_SK_LOOKUP;
  attr.insns = reinterpret_cast<uint64_t>(program.data());
  attr.insn_cnt = static_cast<uint32_t>(program.size());
  attr.license = reinterpret_cast<uint64_t>(license);
  attr.log_buf = reinterpret_cast<uint64_t>(log);
  attr.log_size = sizeof log;
  attr.log_level = 1;
  int prog = static_cast<int>(bpf(BPF_PROG_LOAD, attr));
  if (prog < 0) return errno_text("bpf program load") + " (" + std::string(log, strnlen(log, sizeof log)) + ")";

  int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (netns < 0) return errno_text("open /proc/self/ns/net");
  attr = {};
  attr.link_create.prog_fd = static_cast<uint32_t>(prog);
  attr.link_create.target_fd = static_cast<uint32_t>(netns);
  attr.link_create.attach_type = BPF_SK_LOOKUP;
  int link = static_cast<int>(bpf(BPF_LINK_CREATE, attr));
  int err = errno;
  close(netns);
  if (link < 0) return errno_text("bpf link to the network namespace", err);
  // The program and link fds stay open: closing the link would detach the program.
  map_fd = map;
  return {};
}

std::string steer_tcp_to(int map_fd, int listener) {
  unsigned lo = if_nametoindex("lo");
  if (lo == 0) return errno_text("no loopback interface");
  if (auto e = add_address(lo); !e.empty()) return "address " + std::string(kGuestAddress) + ": " + e;
  if (auto e = add_anyip_route(lo); !e.empty()) return "route: " + e;
  uint32_t key = 0;
  uint64_t value = static_cast<uint64_t>(listener);
  bpf_attr attr{};
  attr.map_fd = static_cast<uint32_t>(map_fd);
  attr.key = reinterpret_cast<uint64_t>(&key);
  attr.value = reinterpret_cast<uint64_t>(&value);
  attr.flags = BPF_ANY;
  if (bpf(BPF_MAP_UPDATE_ELEM, attr) != 0) return errno_text("bpf sockmap update");
  return {};
}

}  // namespace vial::guest
