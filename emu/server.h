// The vfio-user server: serves one DeviceModel to one client at a time over a UNIX
// socket (QEMU docs/interop/vfio-user.rst). The server owns the PCI config space, the
// MSI-X table, the client's DMA mappings, DMA dirty logging and the migration v2 state
// machine; the model is polled on a device thread the server owns.
//
// Threads: one socket thread accepts clients and answers their messages; one device
// thread polls the model while the device runs. Both touch the model and the device
// state only under one device lock, so a model needs no locking of its own.
#pragma once

#include <uvio/status.h>

#include "emu/device_model.h"
#include "iommu/device.h"

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace uvio::emu {

struct ServerOptions {
  // Offer VFIO_MIGRATION_P2P (RUNNING_P2P, PRE_COPY_P2P) besides STOP_COPY and PRE_COPY.
  // Off by default: the vfio-user specification does not use the P2P states.
  bool p2p_states = false;
};

class Server {
 public:
  // Checks the model's layout (BAR sizes, shared pages, MSI-X placement, capabilities),
  // attaches it and starts the threads.
  static Result<std::unique_ptr<Server>> create(std::unique_ptr<DeviceModel> model,
                                                const ServerOptions& options = {});
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // In-process clients: a connected socket whose other end the server serves (after the
  // current client, if any, goes). Hand it to iommu::open_vfio_user_fd.
  Result<int> connect();
  // Also accept clients on a UNIX socket at `path` (a stale socket file is replaced).
  Status listen(const std::string& path);

  // Stops both threads and disconnects the client; idempotent.
  void stop();

  // What the device is doing, for tests and tools.
  iommu::MigState mig_state() const;
  uint64_t clients_served() const;  // clients that have disconnected
  bool client_connected() const;
  // Runs fn with the model under the device lock.
  void with_model(const std::function<void(DeviceModel&)>& fn);

 private:
  Server();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uvio::emu
