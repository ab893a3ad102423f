// Vm::execute with an argv instead of code, and with as_root, in a real VM (TCG).
#include "vm_manager_harness.h"

namespace vial::test {
namespace {

asio::awaitable<RunResult> exec_argv(Vm& vm, std::vector<std::string> argv, bool as_root = false) {
  RunRequest request;
  request.language = vm.language();
  request.argv = std::move(argv);
  request.as_root = as_root;
  ExecCallbacks none;
  co_return co_await vm.execute(request, none);
}

TEST_F(VmManagerTest, ArgvExecsAndRoot) {
  VIAL_REQUIRE_IMAGE("shell");
  run_engine([&]() -> asio::awaitable<void> {
    auto stopper = co_await start_manager(settings());
    auto vm = co_await stopper.manager->create_vm("shell");
    std::vector<std::string> argv = {"printf", "%s|", "two words", "$HOME", ""};
    RunResult r = co_await exec_argv(*vm, argv);
    EXPECT_EQ(r.stdout_data, "two words|$HOME||") << "argv goes to the program as is: " << describe(r);
    EXPECT_EQ(r.exit_code, 0) << describe(r);

    argv = {"id", "-u"};
    RunResult user = co_await exec_argv(*vm, argv);
    EXPECT_EQ(user.stdout_data, "1000\n") << describe(user);
    RunResult root = co_await exec_argv(*vm, argv, true);
    EXPECT_EQ(root.stdout_data, "0\n") << describe(root);

    // Root can do what the sandbox user can't, inside this VM only.
    argv = {"sh", "-c", "echo x > /etc/vial-root-test && cat /etc/vial-root-test"};
    RunResult denied = co_await exec_argv(*vm, argv);
    EXPECT_NE(denied.exit_code, 0) << describe(denied);
    RunResult allowed = co_await exec_argv(*vm, argv, true);
    EXPECT_EQ(allowed.stdout_data, "x\n") << describe(allowed);

    argv = {"no-such-program"};
    RunResult missing = co_await exec_argv(*vm, argv);
    EXPECT_EQ(missing.exit_code, 127) << describe(missing);
    stopper.manager->destroy_vm(vm);
  });
}

}  // namespace
}  // namespace vial::test
