// Agent protocol shared by the host (vm/) and the guest (guest/vial-agent).
//
// One virtio-serial port carries multiplexed, binary-safe frames:
//   u32 payload_length (little-endian) | u8 type | u32 request_id (little-endian) | payload
// Control payloads are JSON; stdout/stderr/stdin chunks are raw bytes.
// The host opens the channel with `hello`; every request carries an id chosen by the host,
// and every frame the guest sends about that request carries the same id.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vial::agent {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 9;
// Largest payload either side accepts. Bigger frames are skipped and answered with an error.
inline constexpr uint32_t kMaxPayload = 1u << 20;
// Output is streamed in chunks of at most this size.
inline constexpr size_t kChunkSize = 64 * 1024;

enum class FrameType : uint8_t {
  hello = 1,    // h->g {"version"}; g->h {"version","agent","kernel"}
  ping = 2,     // h->g, empty
  pong = 3,     // g->h, empty
  exec = 4,     // h->g ExecRequest JSON
  stdin_ = 5,   // h->g raw bytes for a running exec; empty payload closes its stdin
  stdout_ = 6,  // g->h raw bytes
  stderr_ = 7,  // g->h raw bytes
  exit = 8,     // g->h ExecResult JSON; the last frame of an exec
  kill = 9,     // h->g {"signal": N} for the exec with this request_id
  error = 10,   // g->h or h->g ErrorBody JSON; ends the request it names
  // h->g ReseedBody JSON, sent after a snapshot restore: the guest credits the entropy to the
  // kernel pool and forces a CRNG reseed, sets CLOCK_REALTIME, and has the warm interpreters
  // re-seed their RNGs. Answered with `ok` once all of that is done, or `error` (bad_request
  // for bad input, reseed_failed when the kernel refused). A parked guest (HelloBody::parked)
  // finishes its boot before answering.
  reseed = 11,
  ok = 12,      // g->h, empty: generic success acknowledgement (reseed, net_up)
  // ---- network (issue 13; see guest/net.h and net/gateway.h) ----
  // h->g NetUpBody JSON: the guest starts handing its TCP connections and DNS queries to the
  // host. Answered with `ok`, or `error` (net_failed). Sent once per VM, after any reseed.
  net_up = 13,
  // Opens a stream. g->h NetOpenBody {"ip","port"}: a guest program connected there (the id has
  // kGuestStreamBit set). h->g {"port"}: a host client connected to a published port; the
  // guest connects to 127.0.0.1:port. Answered with net_opened or net_close.
  net_open = 14,
  net_opened = 15,  // either way, empty: the stream is connected; data may flow
  // Either way, raw bytes of a stream. A side never has more than kNetWindow bytes in flight:
  // the receiver acknowledges what it has written to its socket with net_ack.
  net_data = 16,
  net_ack = 17,    // either way, NetAckBody {"bytes"}: that many more bytes were delivered
  net_eof = 18,    // either way, empty: the sender will send no more data (a TCP half-close)
  net_close = 19,  // either way, optional {"reason"}: the stream is gone; reset the socket
  // g->h a raw DNS query from a guest program; h->g the raw reply, same id.
  dns = 20,
};

// Ids of streams and DNS queries the guest opens have this bit set; the host's never do.
inline constexpr uint32_t kGuestStreamBit = 0x80000000u;
// Bytes one side of a stream may send before the other acknowledges them.
inline constexpr uint64_t kNetWindow = 256u << 10;
// True for the net_* and dns types.
bool is_net_type(FrameType type);

// True for the types defined above.
bool is_known_type(uint8_t type);
std::string_view type_name(FrameType type);

struct Frame {
  FrameType type{};
  uint32_t request_id = 0;
  std::string payload;
};

// Serializes one frame. Throws std::length_error if the payload exceeds kMaxPayload.
void append_frame(std::string& out, FrameType type, uint32_t request_id, std::string_view payload);
std::string encode_frame(FrameType type, uint32_t request_id, std::string_view payload);

// A frame the decoder had to drop: unknown type or a payload over kMaxPayload (its bytes are
// skipped, so the stream stays in sync). The receiver answers it with an `error` frame.
struct DecodeError {
  uint32_t request_id = 0;
  std::string message;
};

// Incremental decoder: feed() bytes as they arrive, then call next() until it returns nothing.
class FrameDecoder final {
 public:
  struct Item {
    std::optional<Frame> frame;        // set for a good frame
    std::optional<DecodeError> error;  // set for a dropped frame
  };

  void feed(std::string_view bytes);
  std::optional<Item> next();
  // Bytes buffered but not yet returned (a partial frame).
  size_t pending() const { return buffer_.size() - offset_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;
  uint64_t skip_ = 0;  // payload bytes of an oversized frame still to discard
};

// ---- control payloads ----

struct ErrorBody {
  std::string code;  // "bad_frame", "bad_request", "unknown_request", "spawn_failed", "busy"...
  std::string message;
};

struct ExecRequest {
  // Either argv, or language + code. Languages: "python", "javascript", "shell".
  std::vector<std::string> argv;
  std::string language;
  std::string code;
  std::map<std::string, std::string> env;
  std::string cwd;              // empty: the sandbox user's home
  bool stdin_open = false;      // true: stdin frames follow; false: stdin is /dev/null
  uint32_t timeout_ms = 30000;  // 0 is invalid
  uint64_t stdout_limit = 1u << 20;
  uint64_t stderr_limit = 100u << 10;
  // Run as root instead of the sandbox user (uid/gid 1000). Named machines use it: there the
  // user owns the whole VM, and root in the guest is root of that VM only (the VM is the
  // isolation boundary), so this opens nothing outside it. Still in its own cgroup with limits.
  bool as_root = false;
  // Non-empty (python code only): run the code in this session's persistent interpreter, so
  // variables, imports and functions survive to the session's next exec, as in a notebook.
  // One exec at a time per session (another is refused with `busy`). Empty: a fresh process.
  std::string session;
};

struct ExecResult {
  std::optional<int> exit_code;  // set when the program exited
  std::optional<int> signal;     // set when it was killed by a signal
  bool timed_out = false;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  uint64_t wall_ms = 0;
  // For a session's exec: the interpreter's CPU time during it, and its peak RSS so far.
  uint64_t cpu_ms = 0;
  uint64_t max_rss_kib = 0;
  bool warm = false;  // the program was forked from a warm interpreter (not exec'd cold)
};

struct HelloBody {
  uint32_t version = kProtocolVersion;
  std::string agent;   // agent build identity, guest->host only
  std::string kernel;  // guest kernel release, guest->host only
  // Languages whose warm interpreter (fork server) is ready right now, guest->host only. A
  // host building a template polls hello until the languages it wants are listed.
  std::vector<std::string> warm;
  // Languages that have a warm interpreter in this guest, ready or still starting. A language
  // missing here (javascript: node can't fork) never becomes warm: don't wait for it.
  std::vector<std::string> warming;
  // guest->host: the guest stopped before touching its root disk (kernel command line
  // `vial.park=1`) so the host can snapshot it; the first `reseed` ends the park and finishes
  // the boot, and only then answers `ok`. Until then, everything but hello/ping/reseed is refused.
  bool parked = false;
};

inline constexpr size_t kReseedEntropyBytes = 64;

struct ReseedBody {
  // Exactly kReseedEntropyBytes raw bytes (JSON: "entropy", lowercase or uppercase hex).
  std::string entropy;
  // Host CLOCK_REALTIME in nanoseconds (JSON: "realtime_ns"); absent: leave the clock alone.
  std::optional<int64_t> realtime_ns;
};

struct NetUpBody {
  // The guest's resolver: an IPv4 address on its loopback where it answers DNS (port 53).
  std::string dns = "127.0.0.1";
};

struct NetOpenBody {
  std::string ip;      // g->h: the address the guest program connected to (IPv4)
  uint16_t port = 0;   // g->h: its port; h->g: the guest port to connect to on 127.0.0.1
};

struct NetAckBody {
  uint64_t bytes = 0;
};

// JSON mapping. from_json throws nlohmann::json::exception (or std::invalid_argument for
// semantic errors such as an empty argv without code) on bad input.
void to_json(nlohmann::json& j, const ErrorBody& v);
void from_json(const nlohmann::json& j, ErrorBody& v);
void to_json(nlohmann::json& j, const ExecRequest& v);
void from_json(const nlohmann::json& j, ExecRequest& v);
void to_json(nlohmann::json& j, const ExecResult& v);
void from_json(const nlohmann::json& j, ExecResult& v);
void to_json(nlohmann::json& j, const HelloBody& v);
void from_json(const nlohmann::json& j, HelloBody& v);
void to_json(nlohmann::json& j, const ReseedBody& v);
void from_json(const nlohmann::json& j, ReseedBody& v);
void to_json(nlohmann::json& j, const NetUpBody& v);
void from_json(const nlohmann::json& j, NetUpBody& v);
void to_json(nlohmann::json& j, const NetOpenBody& v);
void from_json(const nlohmann::json& j, NetOpenBody& v);
void to_json(nlohmann::json& j, const NetAckBody& v);
void from_json(const nlohmann::json& j, NetAckBody& v);

// Hex helpers for ReseedBody. from_hex throws std::invalid_argument on bad input.
std::string to_hex(std::string_view bytes);
std::string from_hex(std::string_view hex);

// Parses a control payload into T, turning every parse failure into std::invalid_argument
// with a message fit for an `error` frame.
template <typename T>
T parse_body(std::string_view payload) {
  nlohmann::json j = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw std::invalid_argument("payload is not valid JSON");
  try {
    return j.get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("bad payload: ") + e.what());
  }
}

}  // namespace vial::agent
