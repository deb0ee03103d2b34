// Logging with levels and components. Control path only: formatting allocates.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace uvio::log {

// DPDK's numbering, so --log-level=7 means the same thing to its users.
enum class Level : int { Emerg = 1, Alert, Crit, Err, Warning, Notice, Info, Debug };

// Returns false for an unknown name. Names: emerg alert crit err error warning warn
// notice info debug, or a number 1..8.
bool parse_level(std::string_view text, Level* out);
std::string_view level_name(Level level);

void set_global_level(Level level);
// A component's level overrides the global one; the component need not exist yet.
void set_component_level(std::string_view component, Level level);
bool enabled(std::string_view component, Level level);

void write(Level level, std::string_view component, std::string_view message);

// Where lines go: stderr by default. Tests capture it.
using Sink = void (*)(Level, std::string_view component, std::string_view message, void* ctx);
void set_sink(Sink sink, void* ctx);

}  // namespace uvio::log

#define UVIO_LOG(level, component, ...)                                                    \
  do {                                                                                     \
    if (::uvio::log::enabled(component, ::uvio::log::Level::level))                        \
      ::uvio::log::write(::uvio::log::Level::level, component, ::fmt::format(__VA_ARGS__)); \
  } while (0)
