// uvio-devinfo's report over the fake kernel: every part of the device shows up.
#include <gtest/gtest.h>

#include <uvio/mem.h>

#include "apps/devinfo/describe.h"
#include "iommu/dma_space.h"
#include "iommu/kernel_backends.h"
#include "test/iommu/fake_kernel.h"

#include <cstdio>
#include <cstdlib>

namespace uvio::iommu {
namespace {

using testing::FakeKernel;

TEST(DevInfo, ReportsRegionsIrqsFeaturesAndTheDomain) {
  FakeKernel fake;
  fake.migration = true;
  ScopedSys scoped(fake);
  MemConfig cfg;
  cfg.total_bytes = 2u << 20;
  cfg.hugepages = false;
  auto mem = Memory::create(cfg);
  ASSERT_TRUE(mem.is_ok());
  DmaSpace dma(**mem);
  OpenOptions o;
  o.mode = VfioMode::Group;
  auto dev = open_pci_device(testing::kFakeBdf, dma, o);
  ASSERT_TRUE(dev.is_ok()) << dev.status().describe();

  devinfo::json j = devinfo::describe(**dev);
  EXPECT_EQ(j["backend"], "type1");
  EXPECT_EQ(j["backend_reason"], "--vfio-mode=group");
  EXPECT_EQ(j["flags"]["names"], "RESET PCI");
  EXPECT_EQ(j["pci"]["vendor_id"], "1b36");
  EXPECT_EQ(j["pci"]["device_id"], "0010");
  ASSERT_EQ(j["regions"].size(), 9u);
  EXPECT_EQ(j["regions"][0]["sparse_mmap"].size(), 2u);
  EXPECT_EQ(j["regions"][0]["msix_mappable"], true);
  EXPECT_EQ(j["regions"][0]["flags"]["names"], "READ WRITE MMAP CAPS");
  EXPECT_EQ(j["regions"][1]["size"], 0u);
  EXPECT_EQ(j["regions"][8]["size"], 0u);  // EINVAL for VGA means "no VGA", not an error
  EXPECT_FALSE(j["regions"][8].contains("error"));
  EXPECT_EQ(j["irqs"][2]["name"], "MSI-X");
  EXPECT_EQ(j["irqs"][2]["count"], 16u);
  EXPECT_EQ(j["migration"]["supported"], true);
  EXPECT_EQ(j["migration"]["flags"]["names"], "STOP_COPY PRE_COPY");
  EXPECT_EQ(j["migration"]["state"], "RUNNING");
  EXPECT_EQ(j["iommu"]["dirty_tracking"], "type1-dirty-pages");
  EXPECT_EQ(j["iommu"]["facts"]["dma_mappings_available"], "65534");  // one mapping made

  char* text = nullptr;
  size_t len = 0;
  std::FILE* out = open_memstream(&text, &len);
  devinfo::print_text(j, out);
  std::fclose(out);
  std::string s(text, len);
  std::free(text);
  EXPECT_NE(s.find("Region 0 (BAR0): size 0x4000"), std::string::npos) << s;
  EXPECT_NE(s.find("Sparse mmap: [0x3000, +0x1000)"), std::string::npos) << s;
  EXPECT_NE(s.find("Capabilities: sparse-mmap msix-mappable"), std::string::npos) << s;
  EXPECT_NE(s.find("Region 1 (BAR1): not present"), std::string::npos) << s;
  EXPECT_NE(s.find("IRQ 2 (MSI-X): count 16"), std::string::npos) << s;
  EXPECT_NE(s.find("Migration: v2, flags [STOP_COPY PRE_COPY], state RUNNING"), std::string::npos) << s;
}

}  // namespace
}  // namespace uvio::iommu
