// Notebook state through the engine (Vm::execute, python) in real VMs (TCG): variables,
// imports and functions persist across executes, an exception keeps them, a timeout leaves
// the VM usable (state kept when the code stops at the interrupt), VMs share nothing, and
// root code has an interpreter of its own.
#include "vm_manager_harness.h"

namespace vial::test {
namespace {

TEST_F(VmManagerTest, NotebookStatePersistsAcrossExecutes) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto vm = co_await stopper.manager->create_vm("python");
    RunResult a = co_await exec(*vm, "x = 41\nimport statistics\ndef double(v):\n    return 2 * v\n");
    EXPECT_EQ(a.exit_code, 0) << describe(a);
    RunResult b = co_await exec(*vm, "print(x + 1, double(x), statistics.mean([1, 3]))");
    EXPECT_EQ(b.stdout_data, "42 82 2\n") << describe(b);

    RunResult c = co_await exec(*vm, "y = 'kept'\nraise ValueError('bad value')\n");
    EXPECT_EQ(c.exit_code, 1) << describe(c);
    EXPECT_NE(c.stderr_data.find("ValueError: bad value"), std::string::npos) << describe(c);
    RunResult d = co_await exec(*vm, "import sys\nprint(y, x)\nsys.exit(5)");
    EXPECT_EQ(d.stdout_data, "kept 41\n") << describe(d);
    EXPECT_EQ(d.exit_code, 5) << describe(d);

    // Stopped by the interrupt at its timeout: the state survives.
    RunResult t = co_await exec(*vm, "import time\nwhile True:\n    time.sleep(0.05)\n", 1s);
    EXPECT_TRUE(t.timed_out) << describe(t);
    EXPECT_EQ(t.exit_code, kTimeoutExitCode) << describe(t);
    EXPECT_TRUE(vm->alive());
    RunResult e = co_await exec(*vm, "print(x)");
    EXPECT_EQ(e.stdout_data, "41\n") << describe(e);

    // Deaf to the interrupt: the interpreter is replaced, the VM stays usable, and says so.
    RunResult k = co_await exec(*vm, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n", 1s);
    EXPECT_TRUE(k.timed_out) << describe(k);
    RunResult f = co_await exec(*vm, "print('x' in globals())");
    EXPECT_EQ(f.stdout_data, "False\n") << describe(f);
    EXPECT_NE(f.stderr_data.find("interpreter was restarted"), std::string::npos) << describe(f);
    EXPECT_EQ(f.exit_code, 0) << describe(f);
    stopper.manager->destroy_vm(vm);
  });
}

TEST_F(VmManagerTest, NotebookStateIsPerVmAndUser) {
  VIAL_REQUIRE_IMAGE("python");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto one = co_await stopper.manager->create_vm("python");
    auto two = co_await stopper.manager->create_vm("python");
    RunResult a = co_await exec(*one, "secret = 'one'");
    EXPECT_EQ(a.exit_code, 0) << describe(a);
    RunResult b = co_await exec(*two, "print(globals().get('secret'))");
    EXPECT_EQ(b.stdout_data, "None\n") << describe(b);
    RunResult c = co_await exec(*one, "print(secret)");
    EXPECT_EQ(c.stdout_data, "one\n") << describe(c);

    // Root code (named machines) has an interpreter of its own in the same VM.
    RunRequest root;
    root.language = "python";
    root.as_root = true;
    root.code = "import os\nuid = os.getuid()\nprint(uid, 'secret' in globals())";
    ExecCallbacks none;
    RunResult r = co_await one->execute(root, none);
    EXPECT_EQ(r.stdout_data, "0 False\n") << describe(r);
    root.code = "print(uid)";
    RunResult r2 = co_await one->execute(root, none);
    EXPECT_EQ(r2.stdout_data, "0\n") << describe(r2);
    RunResult u = co_await exec(*one, "print(secret, 'uid' in globals())");
    EXPECT_EQ(u.stdout_data, "one False\n") << describe(u);
    stopper.manager->destroy_vm(one);
    stopper.manager->destroy_vm(two);
  });
}

}  // namespace
}  // namespace vial::test
