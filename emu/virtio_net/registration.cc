// "virtio-net" in the model registry: `uvio-emud --virtio-net PATH,queues=2,peer=wire0`.
#include "emu/registry.h"
#include "emu/virtio_net/virtio_net_model.h"

namespace uvio::emu::virtio_net {
namespace {

Result<std::unique_ptr<DeviceModel>> make_virtio_net(const ModelArgs& args) {
  Options options;
  for (const auto& [key, value] : args) UVIO_TRY(apply_option(options, key, value));
  auto model = VirtioNetModel::create(options);
  if (!model) return model.status();
  return std::unique_ptr<DeviceModel>(std::move(model.value()));
}

const ModelRegistration kRegistration{
    {"virtio-net", "virtio-net",
     "virtio 1.2 network port: queues=N,mac=MAC,mtu=N,queue_size=N,loopback=1|peer=NAME,"
     "event_idx=0,indirect=0,packed=1,faults=LIST",
     make_virtio_net}};

}  // namespace
}  // namespace uvio::emu::virtio_net
