// PCI identity, capabilities, common configuration, feature negotiation and reset.
#include "test/emu/virtio_net/driver_harness.h"

#include "emu/registry.h"

namespace uvio::emu::virtio_net::testing {
namespace {

uint32_t le32(const std::vector<uint8_t>& body, size_t at) {
  return body[at] | body[at + 1] << 8 | body[at + 2] << 16 | uint32_t{body[at + 3]} << 24;
}

TEST(VirtioNetRegisters, IdentityIsAModernNetworkDevice) {
  auto port = make_port("");
  PciIdentity id = port->identity();
  EXPECT_EQ(id.vendor_id, 0x1AF4);
  EXPECT_EQ(id.device_id, 0x1041);
  EXPECT_EQ(id.revision, 1);
  EXPECT_EQ(id.class_code, 0x020000u);
  EXPECT_EQ(port->type_name(), "virtio-net");
}

TEST(VirtioNetRegisters, CapabilitiesDescribeTheBarLayout) {
  auto port = make_port("queues=2");
  auto caps = port->capabilities();
  ASSERT_EQ(caps.size(), 4u);
  struct Expect {
    uint8_t cfg_type;
    uint64_t offset;
    uint32_t min_length;
  } expect[] = {{spec::kCapCommonCfg, VirtioNetModel::kCommonOffset, spec::common::kSize},
                {spec::kCapNotifyCfg, VirtioNetModel::kNotifyOffset, 4 * 5},
                {spec::kCapIsrCfg, VirtioNetModel::kIsrOffset, 1},
                {spec::kCapDeviceCfg, VirtioNetModel::kDeviceCfgOffset, spec::netcfg::kSize}};
  for (size_t i = 0; i < caps.size(); i++) {
    SCOPED_TRACE(i);
    EXPECT_EQ(caps[i].id, 0x09);
    ASSERT_GE(caps[i].body.size(), 14u);
    EXPECT_EQ(caps[i].body[0], caps[i].body.size() + 2);  // cap_len counts vndr/next
    EXPECT_EQ(caps[i].body[1], expect[i].cfg_type);
    EXPECT_EQ(caps[i].body[2], 0);  // BAR 0
    EXPECT_EQ(le32(caps[i].body, 6), expect[i].offset);
    EXPECT_GE(le32(caps[i].body, 10), expect[i].min_length);
  }
  ASSERT_EQ(caps[1].body.size(), 18u);
  EXPECT_EQ(le32(caps[1].body, 14), VirtioNetModel::kNotifyOffMultiplier);

  auto bars = port->bars();
  ASSERT_EQ(bars.size(), 2u);
  ASSERT_EQ(bars[0].shared.size(), 1u);
  EXPECT_EQ(bars[0].shared[0].offset, VirtioNetModel::kNotifyOffset);
  MsixLayout msix = port->msix();
  EXPECT_EQ(msix.vectors, 6u);  // 5 queues + config
  EXPECT_EQ(msix.bar, 1u);
}

TEST(VirtioNetRegisters, CommonConfigReportsQueuesAndRejectsBadVectors) {
  TestPort port("queues=3,queue_size=128");
  auto& d = port.driver;
  EXPECT_EQ(d.r16(spec::common::kNumQueues), 7);
  d.w16(spec::common::kQueueSelect, 6);
  EXPECT_EQ(d.r16(spec::common::kQueueSize), 128);
  EXPECT_EQ(d.r16(spec::common::kQueueNotifyOff), 6);
  d.w16(spec::common::kQueueSelect, 7);  // no such queue
  EXPECT_EQ(d.r16(spec::common::kQueueSize), 0);
  d.w16(spec::common::kQueueSelect, 0);
  d.w16(spec::common::kQueueMsixVector, 8);  // 8 vectors: 0..7 valid
  EXPECT_EQ(d.r16(spec::common::kQueueMsixVector), spec::kNoVector);
  d.w16(spec::common::kQueueMsixVector, 7);
  EXPECT_EQ(d.r16(spec::common::kQueueMsixVector), 7);
  d.w16(spec::common::kConfigMsixVector, 100);
  EXPECT_EQ(d.r16(spec::common::kConfigMsixVector), spec::kNoVector);
  // 64-bit fields written as two halves (§4.1.3.1).
  d.w32(spec::common::kQueueDesc, 0x89abcdef);
  d.w32(spec::common::kQueueDesc + 4, 0x01234567);
  EXPECT_EQ(d.r32(spec::common::kQueueDesc), 0x89abcdefu);
  EXPECT_EQ(d.r32(spec::common::kQueueDesc + 4), 0x01234567u);
}

TEST(VirtioNetRegisters, DeviceConfigShowsMacPairsMtuAndLink) {
  TestPort port("mac=02:00:00:aa:bb:cc,queues=4,mtu=9000");
  EXPECT_EQ(port.driver.config_mac(), (std::array<uint8_t, 6>{0x02, 0, 0, 0xaa, 0xbb, 0xcc}));
  auto cfg16 = [&](uint32_t off) { return port.model->bar_read(0, VirtioNetModel::kDeviceCfgOffset + off, 2); };
  EXPECT_EQ(cfg16(spec::netcfg::kMaxVirtqueuePairs), 4u);
  EXPECT_EQ(cfg16(spec::netcfg::kMtu), 9000u);
  EXPECT_EQ(cfg16(spec::netcfg::kStatus), 0u);  // no peer: link down

  TestPort looped("loopback=1");
  EXPECT_EQ(looped.model->bar_read(0, VirtioNetModel::kDeviceCfgOffset + spec::netcfg::kStatus, 2),
            spec::kNetSLinkUp);
}

TEST(VirtioNetRegisters, OffersTheNetworkFeatures) {
  TestPort port("");
  uint64_t f = port.driver.device_features();
  for (unsigned bit : {spec::kFVersion1, spec::kFAccessPlatform, spec::kFMac, spec::kFStatus, spec::kFMtu,
                       spec::kFMrgRxbuf, spec::kFCtrlVq, spec::kFMq, spec::kFEventIdx, spec::kFIndirectDesc})
    EXPECT_TRUE(f & spec::bit(bit)) << "feature " << bit;
  EXPECT_FALSE(f & spec::bit(spec::kFRingPacked));

  TestPort plain("event_idx=0,indirect=0");
  uint64_t g = plain.driver.device_features();
  EXPECT_FALSE(g & spec::bit(spec::kFEventIdx));
  EXPECT_FALSE(g & spec::bit(spec::kFIndirectDesc));
}

TEST(VirtioNetRegisters, FeaturesOkRefusedForUnknownFeature) {
  TestPort port("");
  EXPECT_FALSE(port.driver.negotiate(kBaseFeatures | spec::bit(40)));
  EXPECT_FALSE(port.driver.negotiate(kBaseFeatures | spec::bit(spec::kFRingPacked)));
  // A modern-only device needs VERSION_1.
  EXPECT_FALSE(port.driver.negotiate(kBaseFeatures & ~spec::bit(spec::kFVersion1)));
  // MQ depends on CTRL_VQ (§5.1.3.1).
  EXPECT_FALSE(port.driver.negotiate(kBaseFeatures | spec::bit(spec::kFMq)));
  // DRIVER_OK without FEATURES_OK is not taken.
  port.driver.driver_ok();
  EXPECT_FALSE(port.driver.status() & spec::kStatusDriverOk);

  EXPECT_TRUE(port.driver.negotiate(kBaseFeatures | spec::bit(spec::kFMq) | spec::bit(spec::kFCtrlVq)));
  EXPECT_EQ(port.model->driver_features(), kBaseFeatures | spec::bit(spec::kFMq) | spec::bit(spec::kFCtrlVq));
  // Features are frozen after FEATURES_OK.
  port.driver.w32(spec::common::kDriverFeatureSelect, 0);
  port.driver.w32(spec::common::kDriverFeature, 0);
  EXPECT_EQ(port.model->driver_features() & 0xFFFFFFFF,
            (kBaseFeatures | spec::bit(spec::kFMq) | spec::bit(spec::kFCtrlVq)) & 0xFFFFFFFF);
}

TEST(VirtioNetRegisters, WritingZeroStatusResets) {
  TestPort port("queues=2");
  ASSERT_TRUE(port.bring_up());
  EXPECT_TRUE(port.driver.status() & spec::kStatusDriverOk);
  port.driver.w8(spec::common::kDeviceStatus, 0);
  EXPECT_EQ(port.driver.status(), 0);
  EXPECT_EQ(port.model->driver_features(), 0u);
  port.driver.w16(spec::common::kQueueSelect, 1);
  EXPECT_EQ(port.driver.r16(spec::common::kQueueEnable), 0);
  EXPECT_EQ(port.driver.r16(spec::common::kQueueSize), 256);
  EXPECT_EQ(port.driver.r16(spec::common::kQueueMsixVector), spec::kNoVector);
}

TEST(VirtioNetRegisters, EnablingABadQueueLayoutNeedsReset) {
  TestPort port("");
  ASSERT_TRUE(port.driver.negotiate(kBaseFeatures));
  port.driver.w16(spec::common::kQueueSelect, 0);
  port.driver.w16(spec::common::kQueueSize, 48);  // not a power of two
  port.driver.w16(spec::common::kQueueEnable, 1);
  EXPECT_EQ(port.driver.r16(spec::common::kQueueEnable), 0);
  EXPECT_TRUE(port.driver.status() & spec::kStatusNeedsReset);
}

TEST(VirtioNetOptions, ParsesAndRejects) {
  auto ok = parse_options("queues=4,mac=02:11:22:33:44:55,mtu=9000,queue_size=512,peer=w,faults=used-len+config-change");
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(ok->queue_pairs, 4);
  EXPECT_EQ(ok->mac[5], 0x55);
  EXPECT_EQ(ok->mtu, 9000);
  EXPECT_EQ(ok->queue_size, 512);
  EXPECT_EQ(ok->peer, "w");
  EXPECT_EQ(ok->faults, kFaultUsedLen | kFaultConfigChange);
  for (const char* bad : {"queues=0", "queues=33", "mac=01:00:00:00:00:00", "mac=02:00:00:00:00", "mtu=20",
                          "queue_size=100", "loopback=2", "faults=nonsense", "colour=blue", "queues",
                          "loopback=1,peer=x"}) {
    auto r = parse_options(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().code(), EINVAL);
    }
  }
}

TEST(VirtioNetRegistry, CreatesAPortFromArguments) {
  const ModelType* type = ModelRegistry::global().find("virtio-net");
  ASSERT_NE(type, nullptr) << "virtio-net is not registered (is libuvio linked whole?)";
  auto model = type->create({{"queues", "2"}, {"loopback", "1"}});
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ((*model)->type_name(), "virtio-net");
  EXPECT_EQ((*model)->msix().vectors, 6u);
  auto bad = type->create({{"queues", "2"}, {"speed", "fast"}});
  EXPECT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("speed"), std::string::npos);
}

}  // namespace
}  // namespace uvio::emu::virtio_net::testing
