// libFuzzer target: EAL options (uvio::eal_parse) on an argv split from the input.
// The input is the command line with arguments separated by NUL bytes, the way
// /proc/PID/cmdline spells it, so every byte value can appear inside an argument.
#include <uvio/eal.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A bound on argc keeps one input from spending its time in allocation.
  constexpr size_t kMaxArgs = 64;
  std::vector<std::string> args{"uvio-fuzz"};
  std::string current;
  for (size_t i = 0; i < size; i++) {
    if (data[i] == 0) {
      if (args.size() == kMaxArgs) break;
      args.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty() && args.size() < kMaxArgs) args.push_back(std::move(current));

  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto parsed = uvio::eal_parse(static_cast<int>(args.size()), argv.data());
  if (parsed.is_ok()) {
    // A parse that succeeds must leave the application's arguments inside argv.
    if (parsed->app_args_index < 0 || parsed->app_args_index > static_cast<int>(args.size())) __builtin_trap();
  } else if (parsed.status().message().empty()) {
    __builtin_trap();  // every rejection names the option and the reason
  }
  return 0;
}
