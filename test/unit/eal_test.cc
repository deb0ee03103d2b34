#include <uvio/eal.h>
#include <uvio/runtime.h>
#include <uvio/topology.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace uvio {
namespace {

// Holds argv storage for eal_parse.
struct Args {
  std::vector<std::string> words;
  std::vector<char*> ptrs;
  Args(std::initializer_list<std::string> w) : words(w) {
    words.insert(words.begin(), "prog");
    for (auto& s : words) ptrs.push_back(s.data());
  }
  int argc() { return static_cast<int>(ptrs.size()); }
  char** argv() { return ptrs.data(); }
};

Result<EalConfig> parse(std::initializer_list<std::string> w) {
  Args a(w);
  return eal_parse(a.argc(), a.argv());
}

std::string error_of(std::initializer_list<std::string> w) {
  auto r = parse(w);
  EXPECT_FALSE(r.is_ok());
  return r.is_ok() ? "" : r.status().message();
}

int first_cpu() { return topology::usable_cpus().front(); }

TEST(EalOptions, DefaultsUseEveryUsableCpu) {
  auto cfg = parse({});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_EQ(cfg->lcores.size(), topology::usable_cpus().size());
  EXPECT_EQ(cfg->main_lcore, static_cast<unsigned>(first_cpu()));
  EXPECT_TRUE(cfg->mem.hugepages);
  EXPECT_EQ(cfg->vfio_mode, VfioMode::Auto);
}

TEST(EalOptions, LcoreListRangesAndMaps) {
  int c = first_cpu();
  auto cfg = parse({"--lcores", "5@" + std::to_string(c) + ",7-8@" + std::to_string(c), "--main-lcore=7"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  ASSERT_EQ(cfg->lcores.size(), 3u);
  EXPECT_EQ(cfg->lcores[0].lcore, 5u);
  EXPECT_EQ(cfg->lcores[1].lcore, 7u);
  EXPECT_EQ(cfg->lcores[2].lcore, 8u);
  for (auto& l : cfg->lcores) EXPECT_EQ(l.cpu, c);
  EXPECT_EQ(cfg->main_lcore, 7u);
  auto plain = parse({"-l", std::to_string(c)});
  ASSERT_TRUE(plain.is_ok());
  EXPECT_EQ(plain->lcores[0].cpu, c);
}

TEST(EalOptions, Coremask) {
  int c = first_cpu();
  char mask[32];
  snprintf(mask, sizeof mask, "0x%llx", 1ull << c);
  auto cfg = parse({"-c", mask});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  ASSERT_EQ(cfg->lcores.size(), 1u);
  EXPECT_EQ(cfg->lcores[0].cpu, c);
  EXPECT_NE(error_of({"-c", "0x0"}).find("selects no CPU"), std::string::npos);
  EXPECT_NE(error_of({"-c", "xyz"}).find("-c"), std::string::npos);
}

TEST(EalOptions, DevicesAndVdevs) {
  auto cfg = parse({"-a", "3:00.0", "--allow=vfio-user:/tmp/x.sock", "-b", "0000:04:00.1", "--vdev",
                    "emu_nvme0,size=64M,ns=2"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  ASSERT_EQ(cfg->allow.size(), 2u);
  EXPECT_EQ(cfg->allow[0], "0000:03:00.0");
  EXPECT_EQ(cfg->allow[1], "vfio-user:/tmp/x.sock");
  EXPECT_EQ(cfg->block[0], "0000:04:00.1");
  ASSERT_EQ(cfg->vdevs.size(), 1u);
  EXPECT_EQ(cfg->vdevs[0].name, "emu_nvme0");
  ASSERT_NE(cfg->vdevs[0].arg("size"), nullptr);
  EXPECT_EQ(*cfg->vdevs[0].arg("size"), "64M");
  EXPECT_EQ(*cfg->vdevs[0].arg("ns"), "2");
  EXPECT_EQ(cfg->vdevs[0].arg("file"), nullptr);
}

TEST(EalOptions, MemoryAndModes) {
  auto cfg = parse({"-m", "128", "--no-huge", "--iova-mode=va", "--file-prefix", "t1", "--log-level", "debug",
                    "--log-level=mem:err", "--vfio-mode=iommufd", "--vfio-intr", "msi",
                    "--vfio-vf-token=01234567-89ab-cdef-0123-456789abcdef"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_EQ(cfg->mem.total_bytes, 128ull << 20);
  EXPECT_FALSE(cfg->mem.hugepages);
  EXPECT_EQ(cfg->mem.file_prefix, "t1");
  EXPECT_EQ(cfg->log_level, log::Level::Debug);
  ASSERT_EQ(cfg->component_log_levels.size(), 1u);
  EXPECT_EQ(cfg->component_log_levels[0].first, "mem");
  EXPECT_EQ(cfg->component_log_levels[0].second, log::Level::Err);
  EXPECT_EQ(cfg->vfio_mode, VfioMode::Iommufd);
  EXPECT_EQ(cfg->vfio_intr, IntrMode::Msi);
  size_t b;
  EXPECT_TRUE(parse_size_mib_default("2G", &b));
  EXPECT_EQ(b, 2ull << 30);
  EXPECT_TRUE(parse_size_mib_default("64k", &b));
  EXPECT_EQ(b, 64ull << 10);
  EXPECT_FALSE(parse_size_mib_default("12Q", &b));
  EXPECT_FALSE(parse_size_mib_default("0", &b));
}

TEST(EalOptions, ControlSocketAndMigration) {
  auto cfg = parse({"--control-socket=none", "--migrate-listen", "tcp:0.0.0.0:4444", "--migrate-token=s3cret"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_EQ(cfg->control_socket, "none");
  EXPECT_EQ(cfg->migrate_listen, "tcp:0.0.0.0:4444");
  EXPECT_EQ(cfg->migrate_token, "s3cret");
  auto plain = parse({});
  ASSERT_TRUE(plain.is_ok());
  EXPECT_TRUE(plain->control_socket.empty());
  EXPECT_TRUE(plain->migrate_listen.empty());
  EXPECT_NE(error_of({"--migrate-listen=host:1"}).find("not tcp:HOST:PORT or unix:PATH"), std::string::npos);
  EXPECT_NE(error_of({"--control-socket="}).find("--control-socket"), std::string::npos);
  EXPECT_NE(error_of({"--migrate-token="}).find("1 to 256"), std::string::npos);
}

TEST(EalOptions, ApplicationArgumentsAfterDoubleDash) {
  Args a({"--no-huge", "--", "--forward-mode=io", "-i"});
  auto cfg = eal_parse(a.argc(), a.argv());
  ASSERT_TRUE(cfg.is_ok());
  EXPECT_EQ(cfg->app_args_index, 3);
}

TEST(EalOptions, BadInputsNameTheOptionAndReason) {
  EXPECT_NE(error_of({"--frobnicate"}).find("unknown option '--frobnicate'"), std::string::npos);
  EXPECT_NE(error_of({"-z"}).find("unknown option '-z'"), std::string::npos);
  EXPECT_NE(error_of({"-l", "4095"}).find("beyond the maximum"), std::string::npos);
  EXPECT_NE(error_of({"-l", "100"}).find("CPU 100 does not exist"), std::string::npos);
  EXPECT_NE(error_of({"-l", "0@999"}).find("CPU 999 does not exist"), std::string::npos);
  EXPECT_NE(error_of({"-l", "3-1"}).find("--lcores"), std::string::npos);
  EXPECT_NE(error_of({"-l", "(0-1)@0"}).find("groups"), std::string::npos);
  EXPECT_NE(error_of({"-l"}).find("missing value"), std::string::npos);
  EXPECT_NE(error_of({"-m", "lots"}).find("'lots' is not a size"), std::string::npos);
  EXPECT_NE(error_of({"-a", "03:00"}).find("not a PCI address"), std::string::npos);
  EXPECT_NE(error_of({"-a", "0000:03:20.0"}).find("not a PCI address"), std::string::npos);
  EXPECT_NE(error_of({"--iova-mode=xx"}).find("not va or pa"), std::string::npos);
  EXPECT_NE(error_of({"--vfio-mode=magic"}).find("--vfio-mode"), std::string::npos);
  EXPECT_NE(error_of({"--vfio-vf-token=1234"}).find("not a UUID"), std::string::npos);
  EXPECT_NE(error_of({"--log-level=loud"}).find("not a level"), std::string::npos);
  EXPECT_NE(error_of({"--vdev", ",x=1"}).find("missing device name"), std::string::npos);
  EXPECT_NE(error_of({"--vdev", "emu_nvme0,size"}).find("not key=value"), std::string::npos);
  EXPECT_NE(error_of({"--no-huge=1"}).find("takes no value"), std::string::npos);
  EXPECT_NE(error_of({"-m", "64", "--socket-mem", "64"}).find("exclude each other"), std::string::npos);
  EXPECT_NE(error_of({"--no-huge", "--huge-dir", "/mnt/huge"}).find("exclude each other"), std::string::npos);
  int c = first_cpu();
  EXPECT_NE(error_of({"-l", std::to_string(c) + "," + std::to_string(c)}).find("given twice"), std::string::npos);
  EXPECT_NE(error_of({"-l", std::to_string(c), "--main-lcore", "77"}).find("not among the enabled lcores"), std::string::npos);
  EXPECT_NE(error_of({"-a", "0000:03:00.0", "-b", "03:00.0"}).find("both allowed and blocked"), std::string::npos);
  EXPECT_NE(error_of({"stray"}).find("unexpected argument"), std::string::npos);
}

TEST(EalOptionsDeathTest, BadOptionExitsWithStatusTwo) {
  Args a({"--lcores", "no-such-lcore"});
  EXPECT_EXIT(eal_init_or_exit(a.argc(), a.argv(), ""), testing::ExitedWithCode(2), "option --lcores");
}

}  // namespace
}  // namespace uvio
