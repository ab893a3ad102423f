#include "agent/protocol.h"

#include <stdexcept>

namespace vial::agent {

bool is_known_type(uint8_t type) {
  return type >= static_cast<uint8_t>(FrameType::hello) &&
         type <= static_cast<uint8_t>(FrameType::dns);
}

bool is_net_type(FrameType type) { return type >= FrameType::net_open && type <= FrameType::dns; }

std::string_view type_name(FrameType type) {
  switch (type) {
    case FrameType::hello: return "hello";
    case FrameType::ping: return "ping";
    case FrameType::pong: return "pong";
    case FrameType::exec: return "exec";
    case FrameType::stdin_: return "stdin";
    case FrameType::stdout_: return "stdout";
    case FrameType::stderr_: return "stderr";
    case FrameType::exit: return "exit";
    case FrameType::kill: return "kill";
    case FrameType::error: return "error";
    case FrameType::reseed: return "reseed";
    case FrameType::ok: return "ok";
    case FrameType::net_up: return "net_up";
    case FrameType::net_open: return "net_open";
    case FrameType::net_opened: return "net_opened";
    case FrameType::net_data: return "net_data";
    case FrameType::net_ack: return "net_ack";
    case FrameType::net_eof: return "net_eof";
    case FrameType::net_close: return "net_close";
    case FrameType::dns: return "dns";
  }
  return "unknown";
}

namespace {

void put_u32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff),
               static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 24) & 0xff)};
  out.append(b, 4);
}

uint32_t get_u32(const char* p) {
  auto u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | (static_cast<uint32_t>(u[1]) << 8) |
         (static_cast<uint32_t>(u[2]) << 16) | (static_cast<uint32_t>(u[3]) << 24);
}

// Accepts signed or unsigned JSON integers, as long as they are not negative.
void read_uint(const nlohmann::json& j, const char* key, uint64_t& out) {
  const auto& v = j.at(key);
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
  } else if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(v.get<int64_t>());
  } else {
    throw std::invalid_argument(std::string(key) + " must be a non-negative integer");
  }
}

}  // namespace

void append_frame(std::string& out, FrameType type, uint32_t request_id, std::string_view payload) {
  if (payload.size() > kMaxPayload) throw std::length_error("frame payload exceeds kMaxPayload");
  out.reserve(out.size() + kHeaderSize + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size()));
  out.push_back(static_cast<char>(type));
  put_u32(out, request_id);
  out.append(payload);
}

std::string encode_frame(FrameType type, uint32_t request_id, std::string_view payload) {
  std::string out;
  append_frame(out, type, request_id, payload);
  return out;
}

void FrameDecoder::feed(std::string_view bytes) {
  // Discard the rest of an oversized payload as it arrives instead of buffering it.
  if (skip_ > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(skip_, bytes.size()));
    skip_ -= n;
    bytes.remove_prefix(n);
  }
  if (bytes.empty()) return;
  // Compact before growing so the buffer does not hold consumed frames forever.
  if (offset_ > 0 && (offset_ == buffer_.size() || offset_ > buffer_.size() / 2)) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  buffer_.append(bytes);
}

std::optional<FrameDecoder::Item> FrameDecoder::next() {
  if (skip_ > 0) return std::nullopt;
  if (buffer_.size() - offset_ < kHeaderSize) {
    if (offset_ == buffer_.size()) {
      buffer_.clear();
      offset_ = 0;
    }
    return std::nullopt;
  }
  const char* h = buffer_.data() + offset_;
  uint32_t len = get_u32(h);
  uint8_t type = static_cast<uint8_t>(h[4]);
  uint32_t id = get_u32(h + 5);

  if (len > kMaxPayload) {
    offset_ += kHeaderSize;
    size_t avail = buffer_.size() - offset_;
    size_t n = std::min<size_t>(avail, len);
    offset_ += n;
    skip_ = len - n;
    // Whatever follows in the buffer after a completed skip stays for the next call.
    Item item;
    item.error = DecodeError{id, "frame payload of " + std::to_string(len) +
                                     " bytes exceeds the limit of " + std::to_string(kMaxPayload)};
    return item;
  }
  if (buffer_.size() - offset_ < kHeaderSize + len) return std::nullopt;

  std::string payload(h + kHeaderSize, len);
  offset_ += kHeaderSize + len;
  Item item;
  if (!is_known_type(type)) {
    item.error = DecodeError{id, "unknown frame type " + std::to_string(type)};
  } else {
    item.frame = Frame{static_cast<FrameType>(type), id, std::move(payload)};
  }
  return item;
}

// ---- JSON ----

void to_json(nlohmann::json& j, const ErrorBody& v) {
  j = nlohmann::json{{"code", v.code}, {"message", v.message}};
}

void from_json(const nlohmann::json& j, ErrorBody& v) {
  if (!j.is_object()) throw std::invalid_argument("error body must be an object");
  v.code = j.at("code").get<std::string>();
  v.message = j.contains("message") ? j.at("message").get<std::string>() : std::string();
}

void to_json(nlohmann::json& j, const ExecRequest& v) {
  j = nlohmann::json::object();
  if (!v.argv.empty()) j["argv"] = v.argv;
  if (!v.language.empty()) j["language"] = v.language;
  if (!v.code.empty() || !v.language.empty()) j["code"] = v.code;
  if (!v.env.empty()) j["env"] = v.env;
  if (!v.cwd.empty()) j["cwd"] = v.cwd;
  j["stdin"] = v.stdin_open;
  j["timeout_ms"] = v.timeout_ms;
  j["stdout_limit"] = v.stdout_limit;
  j["stderr_limit"] = v.stderr_limit;
  if (v.as_root) j["as_root"] = true;
  if (!v.session.empty()) j["session"] = v.session;
}

void from_json(const nlohmann::json& j, ExecRequest& v) {
  if (!j.is_object()) throw std::invalid_argument("exec request must be a JSON object");
  ExecRequest r;
  bool has_argv = j.contains("argv") && !j.at("argv").is_null();
  bool has_code = j.contains("code") && !j.at("code").is_null();
  if (has_argv) {
    r.argv = j.at("argv").get<std::vector<std::string>>();
    if (r.argv.empty()) throw std::invalid_argument("argv must not be empty");
  }
  if (has_code) r.code = j.at("code").get<std::string>();
  if (j.contains("language") && !j.at("language").is_null())
    r.language = j.at("language").get<std::string>();
  if (!has_argv && !has_code) throw std::invalid_argument("exec needs argv or code");
  if (has_argv && has_code) throw std::invalid_argument("exec takes argv or code, not both");
  if (has_code) {
    if (r.language.empty()) throw std::invalid_argument("code needs a language");
    if (r.language != "python" && r.language != "javascript" && r.language != "shell")
      throw std::invalid_argument("unknown language: " + r.language);
  }
  if (j.contains("env") && !j.at("env").is_null())
    r.env = j.at("env").get<std::map<std::string, std::string>>();
  if (j.contains("cwd") && !j.at("cwd").is_null()) r.cwd = j.at("cwd").get<std::string>();
  if (j.contains("stdin")) r.stdin_open = j.at("stdin").get<bool>();
  if (j.contains("timeout_ms")) {
    uint64_t t = 0;
    read_uint(j, "timeout_ms", t);
    if (t == 0) throw std::invalid_argument("timeout_ms must be > 0");
    if (t > UINT32_MAX) throw std::invalid_argument("timeout_ms out of range");
    r.timeout_ms = static_cast<uint32_t>(t);
  }
  auto limit = [&](const char* key, uint64_t& out) {
    if (j.contains(key)) read_uint(j, key, out);
  };
  limit("stdout_limit", r.stdout_limit);
  limit("stderr_limit", r.stderr_limit);
  if (j.contains("as_root") && !j.at("as_root").is_null()) r.as_root = j.at("as_root").get<bool>();
  if (j.contains("session") && !j.at("session").is_null()) {
    r.session = j.at("session").get<std::string>();
    if (!r.session.empty() && r.language != "python")
      throw std::invalid_argument("session is only supported for python code");
  }
  v = std::move(r);
}

void to_json(nlohmann::json& j, const ExecResult& v) {
  j = nlohmann::json{
      {"exit_code", v.exit_code ? nlohmann::json(*v.exit_code) : nlohmann::json(nullptr)},
      {"signal", v.signal ? nlohmann::json(*v.signal) : nlohmann::json(nullptr)},
      {"timed_out", v.timed_out},
      {"stdout_truncated", v.stdout_truncated},
      {"stderr_truncated", v.stderr_truncated},
      {"wall_ms", v.wall_ms},
      {"cpu_ms", v.cpu_ms},
      {"max_rss_kib", v.max_rss_kib},
      {"warm", v.warm},
  };
}

void from_json(const nlohmann::json& j, ExecResult& v) {
  if (!j.is_object()) throw std::invalid_argument("exec result must be a JSON object");
  ExecResult r;
  auto opt_int = [&](const char* key, std::optional<int>& out) {
    if (j.contains(key) && !j.at(key).is_null()) out = j.at(key).get<int>();
  };
  opt_int("exit_code", r.exit_code);
  opt_int("signal", r.signal);
  if (j.contains("timed_out")) r.timed_out = j.at("timed_out").get<bool>();
  if (j.contains("stdout_truncated")) r.stdout_truncated = j.at("stdout_truncated").get<bool>();
  if (j.contains("stderr_truncated")) r.stderr_truncated = j.at("stderr_truncated").get<bool>();
  if (j.contains("wall_ms")) r.wall_ms = j.at("wall_ms").get<uint64_t>();
  if (j.contains("cpu_ms")) r.cpu_ms = j.at("cpu_ms").get<uint64_t>();
  if (j.contains("max_rss_kib")) r.max_rss_kib = j.at("max_rss_kib").get<uint64_t>();
  if (j.contains("warm")) r.warm = j.at("warm").get<bool>();
  v = r;
}

void to_json(nlohmann::json& j, const HelloBody& v) {
  j = nlohmann::json{{"version", v.version}};
  if (!v.agent.empty()) j["agent"] = v.agent;
  if (!v.kernel.empty()) j["kernel"] = v.kernel;
  if (!v.warm.empty()) j["warm"] = v.warm;
  if (!v.warming.empty()) j["warming"] = v.warming;
  if (v.parked) j["parked"] = true;
}

void from_json(const nlohmann::json& j, HelloBody& v) {
  if (!j.is_object()) throw std::invalid_argument("hello must be a JSON object");
  HelloBody h;
  h.version = j.at("version").get<uint32_t>();
  if (j.contains("agent") && !j.at("agent").is_null()) h.agent = j.at("agent").get<std::string>();
  if (j.contains("kernel") && !j.at("kernel").is_null())
    h.kernel = j.at("kernel").get<std::string>();
  if (j.contains("warm") && !j.at("warm").is_null())
    h.warm = j.at("warm").get<std::vector<std::string>>();
  if (j.contains("warming") && !j.at("warming").is_null())
    h.warming = j.at("warming").get<std::vector<std::string>>();
  if (j.contains("parked") && !j.at("parked").is_null()) h.parked = j.at("parked").get<bool>();
  v = std::move(h);
}

std::string to_hex(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) throw std::invalid_argument("hex string has an odd length");
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) throw std::invalid_argument("bad hex digit");
    out.push_back(static_cast<char>((hi << 4) | lo));
  }
  return out;
}

void to_json(nlohmann::json& j, const ReseedBody& v) {
  j = nlohmann::json{{"entropy", to_hex(v.entropy)}};
  if (v.realtime_ns) j["realtime_ns"] = *v.realtime_ns;
}

void from_json(const nlohmann::json& j, ReseedBody& v) {
  if (!j.is_object()) throw std::invalid_argument("reseed must be a JSON object");
  ReseedBody r;
  const auto& e = j.at("entropy");
  if (!e.is_string()) throw std::invalid_argument("entropy must be a hex string");
  r.entropy = from_hex(e.get<std::string>());
  if (r.entropy.size() != kReseedEntropyBytes)
    throw std::invalid_argument("entropy must be " + std::to_string(kReseedEntropyBytes) +
                                " bytes (" + std::to_string(kReseedEntropyBytes * 2) +
                                " hex digits)");
  if (j.contains("realtime_ns") && !j.at("realtime_ns").is_null()) {
    uint64_t ns = 0;
    read_uint(j, "realtime_ns", ns);
    if (ns > static_cast<uint64_t>(INT64_MAX)) throw std::invalid_argument("realtime_ns out of range");
    r.realtime_ns = static_cast<int64_t>(ns);
  }
  v = std::move(r);
}

void to_json(nlohmann::json& j, const NetUpBody& v) { j = nlohmann::json{{"dns", v.dns}}; }

void from_json(const nlohmann::json& j, NetUpBody& v) {
  if (!j.is_object()) throw std::invalid_argument("net_up must be a JSON object");
  NetUpBody r;
  if (j.contains("dns")) r.dns = j.at("dns").get<std::string>();
  v = std::move(r);
}

void to_json(nlohmann::json& j, const NetOpenBody& v) {
  j = nlohmann::json{{"port", v.port}};
  if (!v.ip.empty()) j["ip"] = v.ip;
}

void from_json(const nlohmann::json& j, NetOpenBody& v) {
  if (!j.is_object()) throw std::invalid_argument("net_open must be a JSON object");
  NetOpenBody r;
  uint64_t port = 0;
  read_uint(j, "port", port);
  if (port == 0 || port > 65535) throw std::invalid_argument("port must be 1-65535");
  r.port = static_cast<uint16_t>(port);
  if (j.contains("ip")) r.ip = j.at("ip").get<std::string>();
  if (r.ip.size() > 64) throw std::invalid_argument("ip is too long");
  v = std::move(r);
}

void to_json(nlohmann::json& j, const NetAckBody& v) { j = nlohmann::json{{"bytes", v.bytes}}; }

void from_json(const nlohmann::json& j, NetAckBody& v) {
  if (!j.is_object()) throw std::invalid_argument("net_ack must be a JSON object");
  NetAckBody r;
  read_uint(j, "bytes", r.bytes);
  v = r;
}

}  // namespace vial::agent
