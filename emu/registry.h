// Device model types by name, so uvio-emud and in-process vdevs create models from the
// command line without knowing them: name -> factory(key=value arguments) -> model.
//
// A model registers itself in its own source file:
//   static const uvio::emu::ModelRegistration kNvme{{"nvme", "nvme", "NVMe 1.4 controller",
//                                                     make_nvme}};
// A static library member is linked only when something refers to it, so a program
// that creates models by name alone must link libuvio whole (uvio-emud does:
// `link_whole:` in its meson.build); otherwise the registrations are silently dropped.
#pragma once

#include <uvio/status.h>

#include "emu/device_model.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace uvio::emu {

using ModelArgs = std::map<std::string, std::string>;
using ModelFactory = std::function<Result<std::unique_ptr<DeviceModel>>(const ModelArgs&)>;

struct ModelType {
  std::string name;     // the model's type_name(): "nvme", "virtio-net"
  std::string option;   // the uvio-emud option that creates one: "nvme" for --nvme
  std::string summary;  // one line for --help, naming the keys it takes
  ModelFactory create;
};

// Thread-safe; entries live for the whole program.
class ModelRegistry {
 public:
  static ModelRegistry& global();
  // EEXIST when the name or option is taken.
  Status add(ModelType type);
  // By name or by option; nullptr when unknown.
  const ModelType* find(std::string_view name_or_option) const;
  std::vector<const ModelType*> list() const;  // sorted by name

 private:
  struct Impl;
  ModelRegistry();
  Impl* impl_;
};

struct ModelRegistration {
  explicit ModelRegistration(ModelType type);
};

// "/path.sock,size=64M,file=disk.img" -> the path and {size: 64M, file: disk.img}.
// Duplicate keys, empty keys and a missing path are errors.
struct DeviceSpec {
  std::string socket_path;
  ModelArgs args;
};
Result<DeviceSpec> parse_device_spec(std::string_view text);

// "4096", "64K", "64M", "2G" (powers of 1024) -> bytes.
Result<uint64_t> parse_size(std::string_view text);

}  // namespace uvio::emu
