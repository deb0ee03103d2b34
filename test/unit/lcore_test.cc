#include <uvio/cycles.h>
#include <uvio/intr.h>
#include <uvio/lcore.h>
#include <uvio/topology.h>

#include <gtest/gtest.h>
#include <sched.h>

#include <chrono>
#include <thread>

namespace uvio {
namespace {

std::unique_ptr<LcoreSet> start_lcores(int n) {
  std::vector<LcoreSpec> specs;
  int cpu = topology::usable_cpus().front();
  for (int i = 0; i < n; i++) specs.push_back({unsigned(i), i == 1 ? cpu : -1});
  auto set = LcoreSet::start(specs, 0);
  EXPECT_TRUE(set.is_ok()) << set.status().message();
  return std::move(set.value());
}

TEST(Lcores, RemoteLaunchRunsOnTheLcoreAndReturnsItsValue) {
  auto set = start_lcores(3);
  EXPECT_EQ(lcore_id(), 0u) << "the calling thread is the main lcore";
  std::atomic<unsigned> seen1{kNoLcore}, seen2{kNoLcore};
  std::atomic<int> cpu1{-1};
  ASSERT_TRUE(set->remote_launch(1, [&] { seen1 = lcore_id(); cpu1 = sched_getcpu(); return 11; }).is_ok());
  ASSERT_TRUE(set->remote_launch(2, [&] { seen2 = lcore_id(); return 22; }).is_ok());
  EXPECT_EQ(set->wait(1), 11);
  EXPECT_EQ(set->wait(2), 22);
  EXPECT_EQ(seen1.load(), 1u);
  EXPECT_EQ(seen2.load(), 2u);
  EXPECT_EQ(cpu1.load(), topology::usable_cpus().front()) << "lcore 1 is pinned";
  EXPECT_FALSE(set->remote_launch(0, [] { return 0; }).is_ok()) << "main is not a worker";
  EXPECT_FALSE(set->remote_launch(9, [] { return 0; }).is_ok());
}

TEST(Lcores, BusyLcoreRefusesASecondLaunch) {
  auto set = start_lcores(2);
  std::atomic<bool> release{false};
  ASSERT_TRUE(set->remote_launch(1, [&] { while (!release) std::this_thread::yield(); return 1; }).is_ok());
  Status again = set->remote_launch(1, [] { return 2; });
  EXPECT_EQ(again.code(), EBUSY);
  release = true;
  EXPECT_EQ(set->wait(1), 1);
  set_lcore_id(kNoLcore);
}

TEST(Services, PauseStopsEveryLcoreAtAQuiescentPoint) {
  auto set = start_lcores(3);
  ServiceRunner runner;
  std::atomic<int> inside{0};
  std::atomic<uint64_t> steps{0};
  auto step = [&] {
    inside++;
    steps++;
    inside--;
  };
  runner.add(1, "a", step);
  runner.add(2, "b", step);
  ASSERT_TRUE(runner.start(*set).is_ok());
  while (runner.iterations(1) < 100 || runner.iterations(2) < 100) std::this_thread::yield();
  runner.pause();
  EXPECT_EQ(inside.load(), 0) << "no lcore is inside a step while paused";
  uint64_t frozen = steps.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(steps.load(), frozen) << "paused services do not run";
  runner.resume();
  while (steps.load() < frozen + 100) std::this_thread::yield();
  runner.stop();
  set_lcore_id(kNoLcore);
}

TEST(Interrupts, EventfdWakesTheLoopAndRunsItsHandler) {
  auto loop = InterruptLoop::create();
  ASSERT_TRUE(loop.is_ok());
  auto efd = make_eventfd();
  ASSERT_TRUE(efd.is_ok());
  uint64_t got = 0;
  ASSERT_TRUE((*loop)->add(*efd, [&](int, uint64_t count) { got += count; }).is_ok());
  EXPECT_EQ((*loop)->add(*efd, [](int, uint64_t) {}).code(), EEXIST);
  auto none = (*loop)->run_once(0);
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(none.value(), 0);
  // A "device" on another thread signals the vector twice while the lcore sleeps.
  std::thread device([fd = *efd] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    signal_eventfd(fd);
    signal_eventfd(fd);
  });
  auto fired = (*loop)->run_once(5000);
  device.join();
  ASSERT_TRUE(fired.is_ok());
  EXPECT_EQ(fired.value(), 1);
  EXPECT_GE(got, 1u);
  EXPECT_TRUE((*loop)->remove(*efd).is_ok());
  EXPECT_EQ((*loop)->remove(*efd).code(), ENOENT);
  close(*efd);
}

TEST(Interrupts, WakeFromAnotherThreadEndsTheWait) {
  auto loop = InterruptLoop::create();
  ASSERT_TRUE(loop.is_ok());
  std::thread waker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    (*loop)->wake();
  });
  auto r = (*loop)->run_once(10000);
  waker.join();
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.value(), 0);
}

TEST(Interrupts, WaitEventfdTimesOutThenFires) {
  auto efd = make_eventfd();
  ASSERT_TRUE(efd.is_ok());
  EXPECT_FALSE(wait_eventfd(*efd, 1));
  signal_eventfd(*efd);
  EXPECT_TRUE(wait_eventfd(*efd, 1000));
  EXPECT_EQ(drain_eventfd(*efd), 0u) << "wait drained the count";
  close(*efd);
}

TEST(Timers, FireInDeadlineOrderAndRepeat) {
  TimerList timers;
  std::vector<int> order;
  timers.arm(30, [&] { order.push_back(3); });
  timers.arm(10, [&] { order.push_back(1); });
  auto periodic = timers.arm(20, [&] { order.push_back(2); }, 100);
  auto cancelled = timers.arm(15, [&] { order.push_back(99); });
  EXPECT_TRUE(timers.cancel(cancelled));
  EXPECT_EQ(timers.manage(5), 0);
  EXPECT_EQ(timers.manage(30), 3);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(timers.manage(120), 1);
  EXPECT_EQ(order.back(), 2);
  EXPECT_TRUE(timers.cancel(periodic));
  EXPECT_EQ(timers.pending(), 0u);
  EXPECT_GT(cycles_per_second(), 100000000u);
}

}  // namespace
}  // namespace uvio
