#include "net/egress_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>

#include "util/paths.h"
#include "util/unique_fd.h"

namespace fs = std::filesystem;

namespace vial::net {
namespace {

void warn_once(const std::string& problem) {
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  std::fprintf(stderr, "vial: warning: the egress log is not being written: %s\n", problem.c_str());
}

// The last `budget` bytes of a regular file (from a line start), or "" for anything else.
std::string read_tail(const fs::path& path, uint64_t budget) {
  // O_NONBLOCK: a FIFO planted in place of the log must not hang the reader.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return {};
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t start = size > budget ? size - budget : 0;
  std::string out(size - start, '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::pread(fd.get(), out.data() + got, out.size() - got, static_cast<off_t>(start + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  if (start > 0) out.erase(0, std::min(out.size(), out.find('\n') + 1));  // a cut first line
  return out;
}

}  // namespace

nlohmann::json to_json(const EgressEvent& e) {
  return {{"time_ms", e.time_ms}, {"vm", e.vm},          {"machine", e.machine}, {"proto", e.proto},
          {"name", e.name},       {"address", e.address}, {"port", e.port},       {"allowed", e.allowed},
          {"rule", e.rule},       {"bytes_up", e.bytes_up}, {"bytes_down", e.bytes_down}};
}

fs::path egress_log_path() { return vial_home() / "logs" / "egress.ndjson"; }

void append_egress_event(const EgressEvent& e) {
  try {
    // replace: a name from a guest need not be UTF-8, and dump() would throw on it.
    const std::string line = to_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    const fs::path path = egress_log_path();
    ensure_private_dir(path.parent_path());
    // Two processes may both rotate at once; the loser moves a short new file over .1, which
    // loses old lines, never a line being written.
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) >= kMaxEgressLogBytes) {
      std::error_code ec;
      fs::rename(path, path.string() + ".1", ec);
    }
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) {
      warn_once(path.string() + ": " + std::strerror(errno));
      return;
    }
    ssize_t n;
    do {
      n = ::write(fd.get(), line.data(), line.size());
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(line.size())) {
      warn_once(path.string() + ": " + (n < 0 ? std::strerror(errno) : "short write"));
    }
  } catch (const std::exception& ex) {
    warn_once(ex.what());
  }
}

std::vector<nlohmann::json> read_egress_events(const std::string& machine, size_t limit) {
  const fs::path path = egress_log_path();
  // The current file first, so a full budget keeps the newest lines.
  const std::string current = read_tail(path, 2 * kMaxEgressLogBytes);
  const std::string rotated = read_tail(path.string() + ".1", 2 * kMaxEgressLogBytes - current.size());
  std::deque<nlohmann::json> kept;
  for (const std::string* text : {&rotated, &current}) {
    std::string_view rest = *text;
    while (!rest.empty() && limit > 0) {
      const size_t nl = rest.find('\n');
      const std::string_view line = rest.substr(0, nl);
      rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      if (!machine.empty()) {
        auto m = j.find("machine");
        if (m == j.end() || !m->is_string() || m->get_ref<const std::string&>() != machine) continue;
      }
      kept.push_back(std::move(j));
      if (kept.size() > limit) kept.pop_front();
    }
  }
  return {std::make_move_iterator(kept.begin()), std::make_move_iterator(kept.end())};
}

}  // namespace vial::net
