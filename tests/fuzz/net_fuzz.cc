// libFuzzer target: arbitrary guest bytes through the DNS parser and reply builders and the
// TLS/HTTP sniffer, and arbitrary JSON through policy_from_json. Must never crash or hang; it
// also aborts when an invariant the gateway relies on breaks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "net/dns_message.h"
#include "net/policy.h"
#include "net/sniff.h"
#include "util/error.h"

using namespace vial::net;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void fuzz_dns(std::string_view in) {
  (void)build_dns_error(in, DnsRcode::formerr);
  auto q = parse_dns_query(in);
  if (!q) return;
  check(q->question_end >= 12 && q->question_end <= in.size());
  const std::string reply = build_dns_reply(in, *q, DnsRcode::noerror, {0x01020304, 0x05060708});
  check(reply.size() >= q->question_end && reply.compare(12, q->question_end - 12, in, 12, q->question_end - 12) == 0);
  check(!parse_dns_query(reply));  // a reply is never taken for a query
}

// The gateway decides once: a decision on a prefix must be the decision on all the bytes.
void fuzz_sniff(std::string_view in, size_t split) {
  const Sniffed all = sniff(in);
  check(all.kind != Sniff::need_more || in.size() < kMaxSniff);
  const Sniffed prefix = sniff(in.substr(0, split));
  if (prefix.kind != Sniff::need_more) check(prefix.kind == all.kind && prefix.name == all.name);
}

void fuzz_policy(std::string_view in) {
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return;
  try {
    const nlohmann::json normalized = to_json(policy_from_json(j));
    check(to_json(policy_from_json(normalized)) == normalized);
  } catch (const vial::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  fuzz_dns(in);
  fuzz_sniff(in, in.empty() ? 0 : data[0] % (in.size() + 1));
  fuzz_policy(in);
  return 0;
}
