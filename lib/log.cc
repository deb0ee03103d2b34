#include <uvio/log.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>

namespace uvio::log {
namespace {

struct Registry {
  std::atomic<int> global{static_cast<int>(Level::Notice)};
  std::atomic<bool> any_component{false};
  std::shared_mutex mu;
  std::map<std::string, int, std::less<>> components;
  std::mutex sink_mu;
  Sink sink = nullptr;
  void* sink_ctx = nullptr;
};

Registry& registry() {
  static Registry r;
  return r;
}

constexpr std::string_view kNames[] = {"", "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};

}  // namespace

bool parse_level(std::string_view text, Level* out) {
  if (text.size() == 1 && text[0] >= '1' && text[0] <= '8') {
    *out = static_cast<Level>(text[0] - '0');
    return true;
  }
  for (int i = 1; i <= 8; i++) {
    if (text == kNames[i]) {
      *out = static_cast<Level>(i);
      return true;
    }
  }
  if (text == "error") { *out = Level::Err; return true; }
  if (text == "warn") { *out = Level::Warning; return true; }
  return false;
}

std::string_view level_name(Level level) {
  int i = static_cast<int>(level);
  return (i >= 1 && i <= 8) ? kNames[i] : "?";
}

void set_global_level(Level level) { registry().global.store(static_cast<int>(level)); }

void set_component_level(std::string_view component, Level level) {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  r.components[std::string(component)] = static_cast<int>(level);
  r.any_component.store(true);
}

bool enabled(std::string_view component, Level level) {
  Registry& r = registry();
  int want = static_cast<int>(level);
  if (r.any_component.load(std::memory_order_relaxed)) {
    std::shared_lock lock(r.mu);
    auto it = r.components.find(component);
    if (it != r.components.end()) return want <= it->second;
  }
  return want <= r.global.load(std::memory_order_relaxed);
}

void write(Level level, std::string_view component, std::string_view message) {
  Registry& r = registry();
  std::lock_guard lock(r.sink_mu);
  if (r.sink) {
    r.sink(level, component, message, r.sink_ctx);
    return;
  }
  std::fprintf(stderr, "%.*s: %.*s: %.*s\n", static_cast<int>(component.size()), component.data(),
               static_cast<int>(level_name(level).size()), level_name(level).data(),
               static_cast<int>(message.size()), message.data());
}

void set_sink(Sink sink, void* ctx) {
  Registry& r = registry();
  std::lock_guard lock(r.sink_mu);
  r.sink = sink;
  r.sink_ctx = ctx;
}

}  // namespace uvio::log
