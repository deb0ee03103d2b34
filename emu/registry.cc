#include "emu/registry.h"

#include <uvio/log.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <mutex>

namespace uvio::emu {

struct ModelRegistry::Impl {
  mutable std::mutex lock;
  std::vector<std::unique_ptr<ModelType>> types;
};

ModelRegistry::ModelRegistry() : impl_(new Impl) {}

ModelRegistry& ModelRegistry::global() {
  // Never destroyed: registrations run from static constructors in any order.
  static ModelRegistry* registry = new ModelRegistry();
  return *registry;
}

Status ModelRegistry::add(ModelType type) {
  if (type.name.empty() || type.option.empty() || !type.create)
    return Status::error(EINVAL, "model registry: a type needs a name, an option and a factory");
  std::lock_guard g(impl_->lock);
  for (const auto& t : impl_->types)
    if (t->name == type.name || t->option == type.option || t->name == type.option || t->option == type.name)
      return Status::error(EEXIST, fmt::format("model registry: '{}' (--{}) is already registered",
                                               type.name, type.option));
  impl_->types.push_back(std::make_unique<ModelType>(std::move(type)));
  return Status::ok();
}

const ModelType* ModelRegistry::find(std::string_view key) const {
  std::lock_guard g(impl_->lock);
  for (const auto& t : impl_->types)
    if (t->name == key || t->option == key) return t.get();
  return nullptr;
}

std::vector<const ModelType*> ModelRegistry::list() const {
  std::lock_guard g(impl_->lock);
  std::vector<const ModelType*> out;
  for (const auto& t : impl_->types) out.push_back(t.get());
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  return out;
}

ModelRegistration::ModelRegistration(ModelType type) {
  std::string name = type.name;
  Status s = ModelRegistry::global().add(std::move(type));
  if (!s) UVIO_LOG(Err, "emu", "registering model '{}': {}", name, s.describe());
}

Result<DeviceSpec> parse_device_spec(std::string_view text) {
  DeviceSpec spec;
  size_t comma = text.find(',');
  spec.socket_path = std::string(text.substr(0, comma));
  if (spec.socket_path.empty())
    return Status::error(EINVAL, fmt::format("'{}': a device needs a socket path before its options",
                                             text));
  while (comma != std::string_view::npos) {
    text = text.substr(comma + 1);
    comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    size_t eq = item.find('=');
    std::string key(item.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "1" : std::string(item.substr(eq + 1));
    if (key.empty()) return Status::error(EINVAL, fmt::format("'{}': an option has no name", item));
    if (!spec.args.emplace(key, value).second)
      return Status::error(EINVAL, fmt::format("option '{}' is given twice", key));
  }
  return spec;
}

Result<uint64_t> parse_size(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data())
    return Status::error(EINVAL, fmt::format("'{}' is not a size (a number with K, M or G)", text));
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  unsigned shift = 0;
  if (unit == "" || unit == "B") shift = 0;
  else if (unit == "K" || unit == "k" || unit == "KiB") shift = 10;
  else if (unit == "M" || unit == "m" || unit == "MiB") shift = 20;
  else if (unit == "G" || unit == "g" || unit == "GiB") shift = 30;
  else return Status::error(EINVAL, fmt::format("'{}': unknown size unit '{}' (use K, M or G)", text, unit));
  if (value > (UINT64_MAX >> shift)) return Status::error(ERANGE, fmt::format("'{}' is too large", text));
  return value << shift;
}

}  // namespace uvio::emu
