// The sandbox engine (VmManager) driven through its C++ API, with real QEMU VMs under TCG:
// create/execute/destroy per language, the warm pool, state across executes, timeouts,
// admission control, clone uniqueness, a QEMU killed mid-execute, stop() and bad settings.
//
// Each test gets a private VIAL_HOME (VialHomeTest); TearDown checks that no QEMU process of
// that home is left and that run/ and overlays/ hold no per-VM file. No test runs more than two
// VMs at once (CTest runs two tests in parallel on a two-core host).
#include "vm_manager_harness.h"

namespace vial::test {
namespace {

// ---------------------------------------------------------------------------------------------
// 1. create / execute / destroy in every language (restored from the template)

struct LanguageCase {
  std::string language;
  std::string code;
  std::string out;
  int exit_code;
};
void PrintTo(const LanguageCase& c, std::ostream* os) { *os << c.language; }

class VmManagerLanguageTest : public VmManagerTest, public ::testing::WithParamInterface<LanguageCase> {};

TEST_P(VmManagerLanguageTest, CreateExecuteDestroy) {
  const LanguageCase c = GetParam();
  VIAL_REQUIRE_IMAGE(c.language);
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    auto vm = co_await manager->create_vm(c.language, "tenant-a", "task-1");
    need(vm != nullptr, "create_vm returned null");
    EXPECT_EQ(vm->language(), c.language);
    EXPECT_EQ(vm->tenant(), "tenant-a");
    EXPECT_EQ(vm->task(), "task-1");
    EXPECT_FALSE(vm->name().empty());
    EXPECT_EQ(vm->source(), VmSource::template_restore);
    EXPECT_TRUE(vm->alive());
    EXPECT_EQ(manager->stats().live, 1u);
    // The fixture's leak check looks for QEMU processes naming the home: make sure it sees this one.
    auto pids = qemu_pids_containing(qemu_needle());
    EXPECT_NE(std::find(pids.begin(), pids.end(), vm->qemu_pid()), pids.end())
        << "QEMU pid " << vm->qemu_pid() << " not found among the processes naming " << home();

    RunResult r = co_await exec(*vm, c.code);
    EXPECT_EQ(r.stdout_data, c.out) << describe(r);
    EXPECT_EQ(r.exit_code, c.exit_code) << describe(r);
    EXPECT_FALSE(r.timed_out) << describe(r);
    EXPECT_EQ(r.source, "template") << describe(r);
    EXPECT_GT(r.timing.exec_ms, 0.0);
    EXPECT_GT(r.timing.boot_ms, 0.0) << "a restored VM reports its restore time";
    EXPECT_GT(r.timing.acquire_ms, 0.0);

    const pid_t pid = vm->qemu_pid();
    manager->destroy_vm(vm);
    EXPECT_FALSE(vm->alive());
    EXPECT_EQ(manager->stats().live, 0u);
    pids = qemu_pids_containing(qemu_needle());
    EXPECT_EQ(std::find(pids.begin(), pids.end(), pid), pids.end()) << "QEMU still running after destroy_vm";
    EXPECT_EQ(dir_entries(home() / "run"), std::vector<std::string>{}) << "destroy_vm leaves files in run/";
    EXPECT_EQ(vm_overlays(home()), std::vector<std::string>{}) << "destroy_vm leaves an overlay";
    manager->destroy_vm(vm);  // twice: a no-op
    EXPECT_EQ(manager->stats().live, 0u);
  });
}

INSTANTIATE_TEST_SUITE_P(Languages, VmManagerLanguageTest,
                         ::testing::Values(LanguageCase{"python", "print(6*7)", "42\n", 0},
                                           LanguageCase{"javascript", "console.log(1+1)", "2\n", 0},
                                           LanguageCase{"shell", "echo hi; exit 3", "hi\n", 3}),
                         [](const ::testing::TestParamInfo<LanguageCase>& info) { return info.param.language; });

TEST_F(VmManagerTest, ColdBootWithoutTemplates) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.use_templates = false;
    auto stopper = co_await start_manager(s);
    auto& manager = stopper.manager;
    auto vm = co_await manager->create_vm("python");
    EXPECT_EQ(vm->source(), VmSource::cold);
    RunResult r = co_await exec(*vm, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(r.source, "cold");
    manager->destroy_vm(vm);
  });
}

// ---------------------------------------------------------------------------------------------
// 2. warm pool

TEST_F(VmManagerTest, WarmPoolServesAndRefills) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.warm_pool = {{"python", 1}};
    s.max_concurrent_vms = 2;
    auto stopper = co_await start_manager(s);
    auto& manager = stopper.manager;
    const auto pooled = [&] { return manager->stats().pooled["python"]; };
    need(co_await poll_until([&] { return pooled() == 1; }, 180s), "the python pool never filled");
    EXPECT_EQ(manager->stats().live, 1u);

    auto vm = co_await manager->create_vm("python", "t", "warm");
    EXPECT_EQ(vm->source(), VmSource::warm);
    RunResult r = co_await exec(*vm, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    EXPECT_EQ(r.source, "warm") << describe(r);
    EXPECT_LT(r.timing.acquire_ms, 1000.0) << "a pool hit should not wait for a restore";
    EXPECT_EQ(r.timing.boot_ms, 0.0) << "a warm VM reports no boot time";

    // The pool refills in the background while we hold the VM (2 slots: 1 handed out, 1 pooled).
    need(co_await poll_until([&] { return pooled() == 1; }, 120s), "the python pool did not refill");
    EXPECT_EQ(manager->stats().live, 2u);
    EXPECT_EQ(qemu_pids_containing(qemu_needle()).size(), 2u);

    manager->destroy_vm(vm);
    EXPECT_EQ(manager->stats().live, 1u);
    // A second pool hit works too.
    auto vm2 = co_await manager->create_vm("python");
    EXPECT_EQ(vm2->source(), VmSource::warm);
    r = co_await exec(*vm2, "print('again')");
    EXPECT_EQ(r.stdout_data, "again\n") << describe(r);
    manager->destroy_vm(vm2);
  });
}

// A pooled VM that dies is replaced: the pool ends up holding a live VM again, and create_vm
// never hands out the dead one.
TEST_F(VmManagerTest, DeadPooledVmIsReplaced) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.warm_pool = {{"python", 1}};
    s.max_concurrent_vms = 2;
    auto stopper = co_await start_manager(s);
    auto& manager = stopper.manager;
    need(co_await poll_until([&] { return manager->stats().pooled["python"] == 1; }, 180s),
         "the python pool never filled");
    auto pids = qemu_pids_containing(qemu_needle());
    need(pids.size() == 1, "expected one pooled QEMU, found " + std::to_string(pids.size()));
    const pid_t dead = pids.front();
    ::kill(dead, SIGKILL);
    const auto replaced = [&] {
      auto now = qemu_pids_containing(qemu_needle());
      return manager->stats().pooled["python"] == 1 && now.size() == 1 && now.front() != dead;
    };
    EXPECT_TRUE(co_await poll_until(replaced, 30s))
        << "30+ s after its QEMU was killed, the pool still holds the dead VM (pooled="
        << manager->stats().pooled["python"] << ", live=" << manager->stats().live << ")";

    auto vm = co_await manager->create_vm("python");
    EXPECT_TRUE(vm->alive());
    EXPECT_NE(vm->qemu_pid(), dead);
    RunResult r = co_await exec(*vm, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    manager->destroy_vm(vm);
  });
}

// ---------------------------------------------------------------------------------------------
// 3. state persists across executes on one VM

TEST_F(VmManagerTest, StatePersistsAcrossExecutes) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    auto vm = co_await manager->create_vm("python");
    RunResult w = co_await exec(*vm,
                                "import os\n"
                                "open('/tmp/vial-state.txt', 'w').write('in-tmp')\n"
                                "open(os.path.expanduser('~/note.txt'), 'w').write('in-home')\n"
                                "print(os.getcwd())\n");
    EXPECT_EQ(w.exit_code, 0) << describe(w);
    RunResult r = co_await exec(*vm,
                                "import os\n"
                                "print(open('/tmp/vial-state.txt').read())\n"
                                "print(open(os.path.expanduser('~/note.txt')).read())\n"
                                "print(os.getcwd())\n");
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(r.stdout_data, "in-tmp\nin-home\n" + w.stdout_data) << describe(r);
    manager->destroy_vm(vm);

    // A fresh VM from the same template does not see them.
    auto fresh = co_await manager->create_vm("python");
    RunResult f = co_await exec(*fresh, "import os\nprint(os.path.exists('/tmp/vial-state.txt'))");
    EXPECT_EQ(f.stdout_data, "False\n") << "state leaked between VMs: " << describe(f);
    manager->destroy_vm(fresh);
  });
}

TEST_F(VmManagerTest, ShellStatePersistsAcrossExecutes) {
  VIAL_REQUIRE_IMAGE("shell");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    auto vm = co_await manager->create_vm("shell");
    RunResult w = co_await exec(*vm, "echo one > ~/counter; mkdir -p /tmp/d && echo two > /tmp/d/f");
    EXPECT_EQ(w.exit_code, 0) << describe(w);
    RunResult r = co_await exec(*vm, "cat ~/counter /tmp/d/f");
    EXPECT_EQ(r.stdout_data, "one\ntwo\n") << describe(r);
    manager->destroy_vm(vm);
  });
}

// ---------------------------------------------------------------------------------------------
// 4. a timeout kills only the program

TEST_F(VmManagerTest, TimeoutLeavesVmUsable) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    auto vm = co_await manager->create_vm("python");
    const auto start = Clock::now();
    RunResult t = co_await exec(*vm, "print('before', flush=True)\nwhile True:\n    pass\n", 1s);
    const double took = seconds_since(start);
    EXPECT_TRUE(t.timed_out) << describe(t);
    EXPECT_EQ(t.exit_code, kTimeoutExitCode) << describe(t);
    EXPECT_EQ(t.stdout_data, "before\n") << "output before the timeout is kept: " << describe(t);
    EXPECT_GE(took, 0.9) << describe(t);
    EXPECT_LT(took, 10.0) << "a 1 s timeout took " << took << " s";
    EXPECT_TRUE(vm->alive());

    RunResult r = co_await exec(*vm, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_FALSE(r.timed_out);

    manager->destroy_vm(vm);
  });
}

// ---------------------------------------------------------------------------------------------
// 5. admission control

TEST_F(VmManagerTest, CapacityErrorWhenFull) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.max_concurrent_vms = 1;
    s.admission_timeout = 2s;
    auto stopper = co_await start_manager(s);
    auto& manager = stopper.manager;
    auto held = co_await manager->create_vm("python");
    EXPECT_EQ(manager->stats().admission_rejections, 0u);

    const auto start = Clock::now();
    std::optional<ErrorKind> kind;
    std::string message;
    try {
      auto extra = co_await manager->create_vm("python");
      manager->destroy_vm(extra);
    } catch (const Error& e) {
      kind = e.kind();
      message = e.what();
    }
    const double waited = seconds_since(start);
    need(kind.has_value(), "a second VM was admitted with max_concurrent_vms 1");
    EXPECT_EQ(*kind, ErrorKind::capacity) << message;
    EXPECT_NE(message.find("capacity"), std::string::npos) << message;
    EXPECT_GE(waited, 1.5) << "create_vm must wait admission_timeout before failing";
    EXPECT_LT(waited, 10.0);
    EXPECT_EQ(manager->stats().admission_rejections, 1u);
    EXPECT_EQ(manager->stats().live, 1u);
    EXPECT_EQ(qemu_pids_containing(qemu_needle()).size(), 1u);

    manager->destroy_vm(held);
    auto next = co_await manager->create_vm("python");
    RunResult r = co_await exec(*next, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    manager->destroy_vm(next);
    EXPECT_EQ(manager->stats().admission_rejections, 1u);
  });
}

// A create_vm waiting for capacity proceeds as soon as a slot frees up.
TEST_F(VmManagerTest, AdmissionWaitsForAFreedSlot) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.max_concurrent_vms = 1;
    s.admission_timeout = 60s;
    auto ex = co_await asio::this_coro::executor;
    auto manager = VmManager::create(ex, s);
    StopOnExit stopper{manager};
    co_await manager->start();
    auto held = co_await manager->create_vm("python");
    asio::co_spawn(
        ex,
        [manager, held]() -> asio::awaitable<void> {
          co_await sleep_for(1500ms);
          manager->destroy_vm(held);
        },
        asio::detached);
    const auto start = Clock::now();
    auto next = co_await manager->create_vm("python");
    const double waited = seconds_since(start);
    EXPECT_GE(waited, 1.4);
    EXPECT_LT(waited, 40.0) << "create_vm did not notice the freed slot";
    EXPECT_FALSE(held->alive());
    EXPECT_EQ(manager->stats().admission_rejections, 0u);
    RunResult r = co_await exec(*next, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    manager->destroy_vm(next);
  });
}

// ---------------------------------------------------------------------------------------------
// 6. clones do not share secrets; the guest clock follows the host's

double host_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TEST_F(VmManagerTest, ClonesHaveUniqueEntropyAndHostClock) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    const std::string code =
        "import os, random, uuid, time\n"
        "print(os.urandom(16).hex())\n"
        "print(random.random())\n"
        "print(uuid.uuid4())\n"
        "print(repr(time.time()))\n";
    // Two clones of the same template, alive together.
    auto a = co_await manager->create_vm("python");
    auto b = co_await manager->create_vm("python");
    EXPECT_EQ(a->source(), VmSource::template_restore);
    EXPECT_EQ(b->source(), VmSource::template_restore);
    std::vector<std::vector<std::string>> outputs;
    const std::vector<Vm*> order = {a.get(), b.get(), a.get()};  // named: GCC 12 and init lists in coroutines
    for (Vm* vm : order) {
      const double before = host_now_s();
      RunResult r = co_await exec(*vm, code);
      const double after = host_now_s();
      EXPECT_EQ(r.exit_code, 0) << describe(r);
      auto lines = lines_of(r.stdout_data);
      need(lines.size() == 4, "unexpected output: " + describe(r));
      const double guest = std::stod(lines[3]);
      EXPECT_GT(guest, before - 5.0) << "guest clock behind the host by " << before - guest << " s";
      EXPECT_LT(guest, after + 5.0) << "guest clock ahead of the host by " << guest - after << " s";
      lines.pop_back();
      outputs.push_back(lines);
    }
    const char* what[] = {"os.urandom(16)", "random.random()", "uuid.uuid4()"};
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_NE(outputs[0][i], outputs[1][i]) << "two clones produced the same " << what[i] << ": " << outputs[0][i];
      EXPECT_NE(outputs[0][i], outputs[2][i]) << "two executes in one VM produced the same " << what[i];
    }
    manager->destroy_vm(a);
    manager->destroy_vm(b);
    // A clone made later (sequentially) differs too.
    auto c = co_await manager->create_vm("python");
    RunResult r = co_await exec(*c, code);
    auto lines = lines_of(r.stdout_data);
    need(lines.size() == 4, "unexpected output: " + describe(r));
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_NE(lines[i], outputs[0][i]) << "a later clone repeated " << what[i];
      EXPECT_NE(lines[i], outputs[1][i]) << "a later clone repeated " << what[i];
    }
    manager->destroy_vm(c);
  });
}

TEST_F(VmManagerTest, JavascriptClonesHaveUniqueEntropy) {
  VIAL_REQUIRE_IMAGE("javascript");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    const std::string code =
        "const c = require('crypto');\n"
        "console.log(c.randomBytes(16).toString('hex'));\n"
        "console.log(Math.random());\n"
        "console.log(c.randomUUID());\n"
        "console.log(Date.now() / 1000);\n";
    auto a = co_await manager->create_vm("javascript");
    auto b = co_await manager->create_vm("javascript");
    std::vector<std::vector<std::string>> outputs;
    const std::vector<Vm*> order = {a.get(), b.get()};
    for (Vm* vm : order) {
      const double before = host_now_s();
      RunResult r = co_await exec(*vm, code);
      const double after = host_now_s();
      EXPECT_EQ(r.exit_code, 0) << describe(r);
      auto lines = lines_of(r.stdout_data);
      need(lines.size() == 4, "unexpected output: " + describe(r));
      const double guest = std::stod(lines[3]);
      EXPECT_GT(guest, before - 5.0) << "guest clock behind the host by " << before - guest << " s";
      EXPECT_LT(guest, after + 5.0) << "guest clock ahead of the host by " << guest - after << " s";
      lines.pop_back();
      outputs.push_back(lines);
    }
    const char* what[] = {"crypto.randomBytes(16)", "Math.random()", "crypto.randomUUID()"};
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_NE(outputs[0][i], outputs[1][i]) << "two clones produced the same " << what[i] << ": " << outputs[0][i];
    }
    manager->destroy_vm(a);
    manager->destroy_vm(b);
  });
}

// ---------------------------------------------------------------------------------------------
// 7. a QEMU killed mid-execute: an error, not a hang; destroy_vm removes its files

TEST_F(VmManagerTest, QemuKilledMidExecuteThrows) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto manager = VmManager::create(ex, settings());
    StopOnExit stopper{manager};
    co_await manager->start();
    auto vm = co_await manager->create_vm("python");
    const pid_t pid = vm->qemu_pid();

    auto started = std::make_shared<bool>(false);
    auto killed_at = std::make_shared<std::optional<Clock::time_point>>();
    // Kills QEMU once the program runs (or after 10 s regardless).
    asio::co_spawn(
        ex,
        [started, killed_at, pid]() -> asio::awaitable<void> {
          const auto end = Clock::now() + 10s;
          while (!*started && Clock::now() < end) co_await sleep_for(50ms);
          co_await sleep_for(200ms);
          *killed_at = Clock::now();
          ::kill(pid, SIGKILL);
        },
        asio::detached);

    RunRequest request;
    request.language = "python";
    request.code = "import time\nprint('started', flush=True)\ntime.sleep(30)\nprint('woke')\n";
    request.timeout = 60s;
    ExecCallbacks stream;
    stream.on_stdout = [started](std::string_view chunk) {
      if (chunk.find("started") != std::string_view::npos) *started = true;
    };
    std::optional<std::string> error;
    bool returned = false;
    try {
      RunResult r = co_await vm->execute(request, stream);
      returned = true;
      ADD_FAILURE() << "execute returned a result after QEMU was killed: " << describe(r);
    } catch (const Error& e) {
      error = std::string(to_string(e.kind())) + ": " + e.what();
    }
    need(killed_at->has_value(), "the killer never ran");
    const double after_kill = seconds_since(**killed_at);
    EXPECT_TRUE(*started) << "the program never printed 'started'";
    EXPECT_TRUE(error.has_value() || returned);
    EXPECT_LT(after_kill, 10.0) << "execute took " << after_kill << " s to notice QEMU died";
    EXPECT_FALSE(vm->alive());

    manager->destroy_vm(vm);
    EXPECT_EQ(manager->stats().live, 0u);
    EXPECT_EQ(dir_entries(home() / "run"), std::vector<std::string>{}) << "files left after destroy_vm";
    EXPECT_EQ(vm_overlays(home()), std::vector<std::string>{}) << "overlay left after destroy_vm";

    // The manager carries on.
    auto next = co_await manager->create_vm("python");
    RunResult r = co_await exec(*next, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    manager->destroy_vm(next);
  });
}

// ---------------------------------------------------------------------------------------------
// 8. stop() kills pooled and handed-out VMs and removes their files

TEST_F(VmManagerTest, StopKillsPooledAndHandedOutVms) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.warm_pool = {{"python", 1}};
    s.max_concurrent_vms = 2;
    auto stopper = co_await start_manager(s);
    auto& manager = stopper.manager;
    const auto pooled = [&] { return manager->stats().pooled["python"]; };
    need(co_await poll_until([&] { return pooled() == 1; }, 180s), "the python pool never filled");
    auto handed = co_await manager->create_vm("python");
    need(co_await poll_until([&] { return pooled() == 1; }, 120s), "the python pool did not refill");
    EXPECT_EQ(manager->stats().live, 2u);
    EXPECT_EQ(qemu_pids_containing(qemu_needle()).size(), 2u);
    EXPECT_FALSE(dir_entries(home() / "run").empty()) << "live VMs have run folders (else the check below is moot):\n" << tree(home());

    manager->stop();
    EXPECT_FALSE(handed->alive());
    EXPECT_EQ(manager->stats().live, 0u);
    EXPECT_EQ(manager->stats().pooled["python"], 0u);
    EXPECT_EQ(qemu_pids_containing(qemu_needle()), std::vector<pid_t>{}) << "QEMU left after stop()";
    EXPECT_EQ(dir_entries(home() / "run"), std::vector<std::string>{}) << "files left in run/ after stop()";
    EXPECT_EQ(vm_overlays(home()), std::vector<std::string>{}) << "overlays left after stop()";
    manager->stop();  // twice: safe
    manager->destroy_vm(handed);  // after stop: a no-op

    bool refused = false;
    try {
      auto late = co_await manager->create_vm("python");
      manager->destroy_vm(late);
    } catch (const Error&) {
      refused = true;
    }
    EXPECT_TRUE(refused) << "create_vm after stop() should fail";
    // Nothing refills after stop().
    co_await sleep_for(1500ms);
    EXPECT_EQ(qemu_pids_containing(qemu_needle()), std::vector<pid_t>{}) << "the pool refilled after stop()";
  });
}

TEST_F(VmManagerTest, StopWhilePoolIsFilling) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.warm_pool = {{"python", 2}};
    s.max_concurrent_vms = 2;
    auto manager = VmManager::create(co_await asio::this_coro::executor, s);
    co_await manager->start();
    // Let a restore get under way, then stop in the middle of it.
    co_await poll_until([&] { return !qemu_pids_containing(qemu_needle()).empty(); }, 60s);
    manager->stop();
    // run_engine returns only once the pool fillers are done; TearDown then checks for leaks.
  });
  EXPECT_EQ(qemu_pids_containing(qemu_needle()), std::vector<pid_t>{});
}

TEST_F(VmManagerTest, DestructorCleansUp) {
  VIAL_REQUIRE_IMAGE("shell");
  run_engine([&]() -> asio::awaitable<void> {
    std::shared_ptr<Vm> vm;
    {
      auto manager = VmManager::create(co_await asio::this_coro::executor, settings());
      co_await manager->start();
      vm = co_await manager->create_vm("shell");
      RunResult r = co_await exec(*vm, "echo hi");
      EXPECT_EQ(r.stdout_data, "hi\n") << describe(r);
    }  // the manager goes without stop(): its destructor kills the VM
    EXPECT_FALSE(vm->alive());
    EXPECT_EQ(qemu_pids_containing(qemu_needle()), std::vector<pid_t>{});
    EXPECT_EQ(dir_entries(home() / "run"), std::vector<std::string>{});
  });
}

// ---------------------------------------------------------------------------------------------
// 9. invalid settings and requests

template <typename F>
asio::awaitable<std::optional<ErrorKind>> error_kind_of(F f, std::string* message = nullptr) {
  try {
    co_await f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    co_return e.kind();
  }
  co_return std::nullopt;
}

TEST_F(VmManagerTest, InvalidSettingsAreRejected) {
  run_engine([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    {
      auto s = settings();
      s.max_concurrent_vms = 0;
      auto manager = VmManager::create(ex, s);
      std::string msg;
      auto kind = co_await error_kind_of([&]() { return manager->start(); }, &msg);
      EXPECT_EQ(kind, ErrorKind::invalid_input) << msg;
      EXPECT_NE(msg.find("max_concurrent_vms"), std::string::npos) << msg;
    }
    {
      auto s = settings();
      s.memory_mib = 16;
      auto manager = VmManager::create(ex, s);
      std::string msg;
      EXPECT_EQ(co_await error_kind_of([&]() { return manager->start(); }, &msg), ErrorKind::invalid_input) << msg;
    }
    {
      auto s = settings();
      s.warm_pool = {{"cobol", 1}};
      auto manager = VmManager::create(ex, s);
      std::string msg;
      EXPECT_EQ(co_await error_kind_of([&]() { return manager->start(); }, &msg), ErrorKind::invalid_input) << msg;
    }
    {
      auto manager = VmManager::create(ex, settings());
      std::string msg;
      auto kind = co_await error_kind_of([&]() -> asio::awaitable<void> { co_await manager->create_vm("python"); }, &msg);
      EXPECT_TRUE(kind.has_value()) << "create_vm before start() must fail";
    }
  });
  EXPECT_EQ(qemu_pids_containing(qemu_needle()), std::vector<pid_t>{});
}

TEST_F(VmManagerTest, WarmPoolNeedsTemplates) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto s = settings();
    s.warm_pool = {{"python", 1}};
    s.use_templates = false;
    auto manager = VmManager::create(co_await asio::this_coro::executor, s);
    std::string msg;
    EXPECT_EQ(co_await error_kind_of([&]() { return manager->start(); }, &msg), ErrorKind::invalid_input) << msg;
  });
}

TEST_F(VmManagerTest, InvalidRequestsAreRejected) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto& manager = stopper.manager;
    std::string msg;
    auto unknown = co_await error_kind_of([&]() -> asio::awaitable<void> { co_await manager->create_vm("cobol"); }, &msg);
    EXPECT_EQ(unknown, ErrorKind::invalid_input) << msg;
    EXPECT_EQ(manager->stats().live, 0u) << "a refused create_vm must not hold a slot";

    auto vm = co_await manager->create_vm("python");
    ExecCallbacks none;
    auto run = [&](RunRequest request) {
      return error_kind_of(
          [&, request]() -> asio::awaitable<void> { co_await vm->execute(request, none); }, &msg);
    };
    RunRequest other;
    other.language = "shell";
    other.code = "echo hi";
    EXPECT_EQ(co_await run(other), ErrorKind::invalid_input) << "a python VM ran shell code: " << msg;
    RunRequest empty;
    empty.language = "python";
    empty.code = "  \n";
    EXPECT_EQ(co_await run(empty), ErrorKind::invalid_input) << msg;
    RunRequest no_time;
    no_time.language = "python";
    no_time.code = "print(1)";
    no_time.timeout = 0s;
    EXPECT_EQ(co_await run(no_time), ErrorKind::invalid_input) << msg;

    // The VM is still fine after refused requests.
    RunResult r = co_await exec(*vm, "print(6*7)");
    EXPECT_EQ(r.stdout_data, "42\n") << describe(r);
    manager->destroy_vm(vm);
  });
}

}  // namespace
}  // namespace vial::test
