#include <uvio/log.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace uvio {
namespace {

std::vector<std::string> captured;
void capture(log::Level level, std::string_view comp, std::string_view msg, void*) {
  captured.push_back(std::string(log::level_name(level)) + " " + std::string(comp) + " " + std::string(msg));
}

TEST(Log, GlobalAndComponentLevelsFilter) {
  log::set_sink(capture, nullptr);
  captured.clear();
  log::set_global_level(log::Level::Warning);
  UVIO_LOG(Info, "ring", "hidden {}", 1);
  UVIO_LOG(Err, "ring", "shown {}", 2);
  log::set_component_level("vfio", log::Level::Debug);
  UVIO_LOG(Debug, "vfio", "detail {}", 3);
  UVIO_LOG(Debug, "ring", "hidden {}", 4);
  log::set_sink(nullptr, nullptr);
  log::set_global_level(log::Level::Notice);
  ASSERT_EQ(captured.size(), 2u);
  EXPECT_EQ(captured[0], "err ring shown 2");
  EXPECT_EQ(captured[1], "debug vfio detail 3");
  log::Level l;
  EXPECT_TRUE(log::parse_level("7", &l));
  EXPECT_EQ(l, log::Level::Info);
  EXPECT_TRUE(log::parse_level("warn", &l));
  EXPECT_FALSE(log::parse_level("9", &l));
}

}  // namespace
}  // namespace uvio
