// The device-type registry and the option parsing uvio-emud uses.
#include "emu/registry.h"
#include "test/emu/test_device.h"

#include <gtest/gtest.h>

namespace uvio::emu {
namespace {

TEST(ModelRegistry, CreatesRegisteredTypesByNameOrOption) {
  ModelFactory make = [](const ModelArgs& args) -> Result<std::unique_ptr<DeviceModel>> {
    if (args.count("bad")) return Status::error(EINVAL, "bad option");
    return std::unique_ptr<DeviceModel>(std::make_unique<testing::TestDevice>());
  };
  // The registry is global and lives as long as the program: unique names per run
  // keep --gtest_repeat meaningful.
  static int round = 0;
  std::string name = "registry-test-dev-" + std::to_string(round);
  std::string option = "rtd" + std::to_string(round++);
  ASSERT_TRUE(ModelRegistry::global().add({name, option, "a test device", make}));
  EXPECT_EQ(ModelRegistry::global().add({name, "other", "", make}).code(), EEXIST);
  EXPECT_EQ(ModelRegistry::global().add({"other", option, "", make}).code(), EEXIST);
  EXPECT_EQ(ModelRegistry::global().add({"", "x", "", make}).code(), EINVAL);
  const ModelType* t = ModelRegistry::global().find(option);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t, ModelRegistry::global().find(name));
  EXPECT_EQ(ModelRegistry::global().find("nope"), nullptr);
  auto m = t->create({});
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)->type_name(), "test-dev");
  EXPECT_FALSE(t->create({{"bad", "1"}}));
  bool listed = false;
  for (const auto* e : ModelRegistry::global().list()) listed |= e == t;
  EXPECT_TRUE(listed);
}

TEST(ModelRegistry, ParsesDeviceSpecs) {
  auto s = parse_device_spec("/tmp/x.sock,size=64M,file=/d.img,ro");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->socket_path, "/tmp/x.sock");
  EXPECT_EQ(s->args.at("size"), "64M");
  EXPECT_EQ(s->args.at("file"), "/d.img");
  EXPECT_EQ(s->args.at("ro"), "1");
  EXPECT_FALSE(parse_device_spec(",size=1"));
  EXPECT_FALSE(parse_device_spec("/p,a=1,a=2"));
  EXPECT_FALSE(parse_device_spec("/p,=1"));
}

TEST(ModelRegistry, ParsesSizes) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("64K"), 64u << 10);
  EXPECT_EQ(*parse_size("64M"), 64u << 20);
  EXPECT_EQ(*parse_size("2G"), 2ull << 30);
  EXPECT_FALSE(parse_size("12Q"));
  EXPECT_FALSE(parse_size("M"));
  EXPECT_FALSE(parse_size("99999999999999999999"));
  EXPECT_EQ(parse_size("17179869184G").status().code(), ERANGE);
}

}  // namespace
}  // namespace uvio::emu
