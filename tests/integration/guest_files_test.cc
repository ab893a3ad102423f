// Guest file operations (sandbox/guest_files.h) against a real VM (TCG): byte-exact round
// trips of big binary files, listings, directory copies with modes both ways, and the
// sandbox-home confinement (traversal and symlinks out of the home).
#include <sys/stat.h>

#include <fstream>
#include <random>

#include "sandbox/guest_files.h"
#include "vm_manager_harness.h"

namespace vial::test {
namespace {

std::string random_bytes(size_t n) {
  std::mt19937_64 rng(12345);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

// The kind of the Error `op` throws, with its message in `message`; nullopt if it succeeds.
asio::awaitable<std::optional<ErrorKind>> error_of(asio::awaitable<void> op, std::string& message) {
  try {
    co_await std::move(op);
  } catch (const Error& e) {
    message = e.what();
    co_return e.kind();
  }
  co_return std::nullopt;
}

asio::awaitable<void> read_into(AgentClient& agent, std::string path, bool as_root) {
  co_await read_file(agent, std::move(path), 1 << 20, as_root);
}

asio::awaitable<RunResult> sh(Vm& vm, std::string script, bool as_root = false) {
  RunRequest request;
  request.language = vm.language();
  request.argv = {"sh", "-c", std::move(script)};
  request.as_root = as_root;
  ExecCallbacks none;
  co_return co_await vm.execute(request, none);
}

const GuestEntry* find_entry(const std::vector<GuestEntry>& entries, const std::string& name) {
  for (const auto& e : entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

unsigned host_mode(const fs::path& p) {
  struct stat st{};
  ::lstat(p.c_str(), &st);
  return st.st_mode & 07777;
}

void write_host(const fs::path& p, const std::string& data, unsigned mode) {
  std::ofstream(p, std::ios::binary) << data;
  fs::permissions(p, static_cast<fs::perms>(mode));
}

std::string read_host(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class GuestFilesTest : public VmManagerTest {};

TEST_F(GuestFilesTest, BinaryRoundTripOf20MiBAndListing) {
  VIAL_REQUIRE_IMAGE("shell");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto vm = co_await stopper.manager->create_vm("shell");
    auto agent = vm->agent();
    const std::string blob = random_bytes(20u << 20);
    co_await write_file(*agent, "/home/sandbox/data/blob.bin", blob, 0640, false);
    std::string back = co_await read_file(*agent, "/home/sandbox/data/blob.bin", 32u << 20, false);
    EXPECT_EQ(back.size(), blob.size());
    EXPECT_TRUE(back == blob) << "the bytes differ";

    co_await write_file(*agent, "/home/sandbox/data/empty", "", 0600, false);
    co_await write_file(*agent, "/home/sandbox/data/run.sh", "#!/bin/sh\necho ran\n", 0755, false);
    RunResult ran = co_await sh(*vm, "/home/sandbox/data/run.sh; id -u -n; stat -c '%U %a' /home/sandbox/data/blob.bin");
    EXPECT_EQ(ran.stdout_data, "ran\nsandbox\nsandbox 640\n") << describe(ran);
    EXPECT_EQ(co_await read_file(*agent, "/home/sandbox/data/empty", 10, false), "");

    auto entries = co_await list_dir(*agent, "/home/sandbox/data", false);
    EXPECT_EQ(entries.size(), 3u);
    const GuestEntry* e = find_entry(entries, "blob.bin");
    need(e != nullptr, "blob.bin not listed");
    EXPECT_EQ(e->type, "file");
    EXPECT_EQ(e->size, blob.size());
    EXPECT_EQ(e->mode, 0640u);
    EXPECT_GT(e->mtime, 1'600'000'000);
    e = find_entry(entries, "run.sh");
    need(e != nullptr, "run.sh not listed");
    EXPECT_EQ(e->mode, 0755u);
    auto home = co_await list_dir(*agent, "/home/sandbox", false);
    e = find_entry(home, "data");
    need(e != nullptr, "data not listed in the home");
    EXPECT_EQ(e->type, "dir");

    auto st = co_await stat_path(*agent, "/home/sandbox/data/blob.bin", false);
    need(st.has_value(), "stat_path found nothing");
    EXPECT_EQ(st->type, "file");
    EXPECT_EQ(st->size, blob.size());
    EXPECT_FALSE((co_await stat_path(*agent, "/home/sandbox/nothing", false)).has_value());

    std::string message;
    auto kind = co_await error_of(read_into(*agent, "/home/sandbox/data/blob.bin", false), message);
    EXPECT_EQ(kind, ErrorKind::too_large);
    EXPECT_NE(message.find("limit of 1048576 bytes"), std::string::npos) << message;
    kind = co_await error_of(read_into(*agent, "/home/sandbox/missing.txt", false), message);
    EXPECT_EQ(kind, ErrorKind::not_found) << message;
    kind = co_await error_of(read_into(*agent, "/home/sandbox/data", false), message);
    EXPECT_EQ(kind, ErrorKind::invalid_input);
    EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
    stopper.manager->destroy_vm(vm);
  });
}

TEST_F(GuestFilesTest, SymlinksOutOfTheHomeAreRefusedUnlessRoot) {
  VIAL_REQUIRE_IMAGE("shell");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto vm = co_await stopper.manager->create_vm("shell");
    auto agent = vm->agent();
    RunResult made = co_await sh(*vm, "ln -s /etc ~/etc-link && ln -s /tmp/outside ~/tmp-file && mkdir ~/ok && ln -s ~/ok ~/ok-link");
    EXPECT_EQ(made.exit_code, 0) << describe(made);

    std::string message;
    auto kind = co_await error_of(read_into(*agent, resolve_session_path("etc-link/passwd"), false), message);
    EXPECT_EQ(kind, ErrorKind::invalid_input);
    EXPECT_NE(message.find("outside /home/sandbox"), std::string::npos) << message;
    auto write_out = [&]() -> asio::awaitable<void> {
      co_await write_file(*agent, resolve_session_path("tmp-file"), "escaped", 0644, false);
    };
    kind = co_await error_of(write_out(), message);
    EXPECT_EQ(kind, ErrorKind::invalid_input) << message;
    RunResult check = co_await sh(*vm, "test -e /tmp/outside && echo exists || echo absent");
    EXPECT_EQ(check.stdout_data, "absent\n") << "a refused write must not happen: " << describe(check);
    auto list_out = [&]() -> asio::awaitable<void> { co_await list_dir(*agent, "/home/sandbox/etc-link", false); };
    kind = co_await error_of(list_out(), message);
    EXPECT_EQ(kind, ErrorKind::invalid_input) << message;

    // A symlink that stays in the home is fine.
    co_await write_file(*agent, resolve_session_path("ok-link/f.txt"), "inside", 0644, false);
    EXPECT_EQ(co_await read_file(*agent, "/home/sandbox/ok/f.txt", 100, false), "inside");
    // Root (named machines) is not confined.
    std::string passwd = co_await read_file(*agent, "/home/sandbox/etc-link/passwd", 1 << 20, true);
    EXPECT_NE(passwd.find("sandbox:x:1000"), std::string::npos) << passwd;
    co_await write_file(*agent, "/opt/vial/root-only", "r", 0600, true);
    RunResult owner = co_await sh(*vm, "stat -c '%U %a' /opt/vial/root-only");
    EXPECT_EQ(owner.stdout_data, "root 600\n") << describe(owner);
    stopper.manager->destroy_vm(vm);
  });
}

TEST_F(GuestFilesTest, DirectoryCopyInAndOutKeepsModes) {
  VIAL_REQUIRE_IMAGE("shell");
  const fs::path src = home() / "src-tree";
  fs::create_directories(src / "bin");
  fs::create_directories(src / "sub" / "empty");
  write_host(src / "a.txt", "alpha\n", 0644);
  write_host(src / "bin" / "run.sh", "#!/bin/sh\necho tree-ran\n", 0755);
  write_host(src / "secret", random_bytes(100000), 0600);
  fs::permissions(src / "sub" / "empty", static_cast<fs::perms>(0700));
  fs::create_symlink("a.txt", src / "link");
  write_host(home() / "single.bin", random_bytes(4096), 0751);

  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto vm = co_await stopper.manager->create_vm("shell");
    auto agent = vm->agent();
    co_await copy_in(*agent, src, "/srv/tree", true);
    co_await copy_in(*agent, home() / "single.bin", "/srv/single.bin", true);
    RunResult seen = co_await sh(*vm,
                                 "cd /srv && stat -c '%n %a %F' tree/a.txt tree/bin/run.sh tree/secret tree/sub/empty "
                                 "single.bin && readlink tree/link && tree/bin/run.sh",
                                 true);
    EXPECT_EQ(seen.stdout_data,
              "tree/a.txt 644 regular file\ntree/bin/run.sh 755 regular file\ntree/secret 600 regular file\n"
              "tree/sub/empty 700 directory\nsingle.bin 751 regular file\na.txt\ntree-ran\n")
        << describe(seen);

    // As the sandbox user into the home, then back out to the host.
    co_await copy_in(*agent, src, "/home/sandbox/tree", false);
    RunResult owner = co_await sh(*vm, "stat -c '%U' /home/sandbox/tree/secret");
    EXPECT_EQ(owner.stdout_data, "sandbox\n") << describe(owner);
    const fs::path out = home() / "out-tree";
    co_await copy_out(*agent, "/home/sandbox/tree", out, false);
    co_await copy_out(*agent, "/srv/single.bin", home() / "single.out", true);
    stopper.manager->destroy_vm(vm);
  });
  const fs::path out = home() / "out-tree";
  EXPECT_EQ(read_host(out / "a.txt"), "alpha\n");
  EXPECT_EQ(read_host(out / "secret"), read_host(src / "secret"));
  EXPECT_EQ(host_mode(out / "a.txt"), 0644u);
  EXPECT_EQ(host_mode(out / "bin" / "run.sh"), 0755u);
  EXPECT_EQ(host_mode(out / "secret"), 0600u);
  EXPECT_EQ(host_mode(out / "sub" / "empty"), 0700u);
  EXPECT_TRUE(fs::is_symlink(out / "link"));
  EXPECT_EQ(fs::read_symlink(out / "link"), "a.txt");
  EXPECT_EQ(read_host(home() / "single.out"), read_host(home() / "single.bin"));
  EXPECT_EQ(host_mode(home() / "single.out"), 0751u);
}

// The hostile probe's repro (issue 15 §1d): a guest tree with a symlink to a host path, copied
// out, then a single file copied onto that name, overwrote the host file. Symlinks that leave
// the copied tree are not copied, a symlink at a single file's destination is never written
// through, and the tree can't set the destination folder's own mode.
TEST_F(GuestFilesTest, CopyOutNeverWritesOutsideItsDestination) {
  VIAL_REQUIRE_IMAGE("shell");
  const fs::path victim = home() / "victim.txt";
  write_host(victim, "precious\n", 0644);
  const fs::path out = home() / "o3";
  std::vector<std::string> skipped;
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto vm = co_await stopper.manager->create_vm("shell");
    auto agent = vm->agent();
    const std::string script = "mkdir -p /root/o2/sub && echo inner > /root/o2/sub/f && ln -s '" + victim.string() +
                               "' /root/o2/victim && ln -s ../../etc/passwd /root/o2/sub/up && ln -s sub/f /root/o2/ok "
                               "&& chmod 000 /root/o2 && echo new > /root/newdata";
    RunResult made = co_await sh(*vm, script, true);
    EXPECT_EQ(made.exit_code, 0) << describe(made);
    skipped = co_await copy_out(*agent, "/root/o2", out, true);
    co_await copy_out(*agent, "/root/newdata", out / "victim", true);
    // A symlink planted at a file's destination is refused, not followed.
    fs::create_symlink(victim, out / "planted");
    bool refused = false;
    try {
      co_await copy_out(*agent, "/root/newdata", out / "planted", true);
    } catch (const Error& e) {
      refused = std::string(e.what()).find("is a symlink") != std::string::npos;
    }
    EXPECT_TRUE(refused);
    stopper.manager->destroy_vm(vm);
  });
  EXPECT_EQ(read_host(victim), "precious\n");
  EXPECT_EQ(read_host(out / "victim"), "new\n");  // a plain file now, at the copy's own path
  EXPECT_FALSE(fs::is_symlink(out / "victim"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(out / "sub" / "up")));
  EXPECT_EQ(fs::read_symlink(out / "ok"), "sub/f");
  EXPECT_EQ(read_host(out / "sub" / "f"), "inner\n");
  EXPECT_EQ(skipped.size(), 2u);
  EXPECT_NE(host_mode(out) & 0700, 0u) << "the guest's tree set the destination's own mode";
}

}  // namespace
}  // namespace vial::test
