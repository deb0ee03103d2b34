#include <uvio/runtime.h>

#include <uvio/control.h>

#include "emu/registry.h"
#include "emu/server.h"
#include "iommu/device.h"
#include "iommu/dma_space.h"
#include "iommu/vfio_user_client.h"

#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace uvio {

namespace {

constexpr const char* kLog = "runtime";

// --vdev names that are emulated devices, and the model type each creates.
struct EmulatedKind {
  std::string_view prefix;
  std::string_view model;
};
constexpr EmulatedKind kEmulatedKinds[] = {{"emu_nvme", "nvme"}, {"emu_net", "virtio-net"}};
// Handled by drivers, not by the runtime (the vhost-user transport of pmd/virtio).
constexpr std::string_view kDriverVdevs[] = {"virtio_user"};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// PCI identity from config space: what drivers match on.
Status identify(RuntimeDevice& d) {
  auto id = d.device->config_read(0x00, 4);
  if (!id) return id.status();
  auto cls = d.device->config_read(0x08, 4);
  if (!cls) return cls.status();
  d.vendor_id = uint16_t(id.value() & 0xffff);
  d.device_id = uint16_t(id.value() >> 16);
  d.class_code = cls.value() >> 8;
  return Status::ok();
}

// Creates each missing directory of `dir` with mode 0700. /tmp is shared: the socket's
// directory must be ours and its parent ours or root's, or another user could swap the
// socket for their own.
Status make_private_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST)
      return errno_status(fmt::format("cannot create {}", part));
  }
  struct stat st{};
  if (::lstat(dir.c_str(), &st) != 0) return errno_status(fmt::format("cannot use {}", dir));
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    return Status::error(EPERM, fmt::format("{} is not a directory of this user", dir));
  std::string parent = dir.substr(0, dir.find_last_of('/'));
  if (!parent.empty() && ::lstat(parent.c_str(), &st) == 0 && st.st_uid != ::geteuid() && st.st_uid != 0)
    return Status::error(EPERM, fmt::format("{} belongs to another user", parent));
  return Status::ok();
}

std::string runtime_info(Runtime& rt) {
  using nlohmann::json;
  json lcores = json::array();
  for (const LcoreSpec& l : rt.lcores().lcores()) lcores.push_back(l.lcore);
  MemStats stats = rt.memory().stats();
  json devices = json::array();
  for (const RuntimeDevice& d : rt.devices()) {
    devices.push_back({{"name", d.name},
                       {"vendor_id", d.vendor_id},
                       {"device_id", d.device_id},
                       {"class_code", d.class_code},
                       {"backend", d.device ? std::string(d.device->backend()) : std::string()}});
  }
  json info = {{"app", rt.config().app_name},
               {"pid", ::getpid()},
               {"lcores", lcores},
               {"memory", {{"total", stats.total}, {"free", stats.free}, {"areas", stats.areas}}},
               {"devices", devices}};
  return info.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

// Software devices run in-process, each on its own server thread, and are reached
// through the vfio-user protocol like any other device.
struct Runtime::Emulated {
  std::vector<std::unique_ptr<emu::Server>> servers;
  ~Emulated() {
    for (auto& s : servers) s->stop();
  }
};

Runtime::Runtime(const EalConfig& cfg) : cfg_(cfg) {}

Runtime::~Runtime() {
  control_.reset();          // no handler may run on what is torn down below
  services_.stop();
  lcores_.reset();           // joins lcore threads before what they use goes away
  devices_.clear();
  owned_devices_.clear();    // clients first: they unmap their DMA while the servers answer
  emulated_.reset();
  dma_.reset();
}

Status Runtime::open_devices() {
  iommu::OpenOptions opts;
  opts.mode = cfg_.vfio_mode;
  opts.intr = cfg_.vfio_intr;
  opts.vf_token = cfg_.vf_token;
  auto add = [&](std::string name, std::unique_ptr<iommu::Device> dev) -> Status {
    RuntimeDevice rd;
    rd.name = std::move(name);
    rd.device = dev.get();
    owned_devices_.push_back(std::move(dev));
    Status st = identify(rd);
    if (!st) return Status::error(st.code(), fmt::format("{}: cannot read PCI config space: {}", rd.name, st.message()));
    UVIO_LOG(Info, kLog, "{}: {:04x}:{:04x} class {:06x} over {}", rd.name, rd.vendor_id, rd.device_id, rd.class_code,
             rd.device->backend());
    devices_.push_back(std::move(rd));
    return Status::ok();
  };
  for (const std::string& spec : cfg_.allow) {
    auto dev = iommu::open_device(spec, *dma_, opts);
    if (!dev) return Status::error(dev.status().code(), fmt::format("-a {}: {}", spec, dev.status().message()));
    UVIO_TRY(add(spec, std::move(dev.value())));
  }
  for (const VdevSpec& v : cfg_.vdevs) {
    if (std::any_of(std::begin(kDriverVdevs), std::end(kDriverVdevs), [&](auto p) { return starts_with(v.name, p); })) continue;
    const EmulatedKind* kind = nullptr;
    for (const EmulatedKind& k : kEmulatedKinds)
      if (starts_with(v.name, k.prefix)) kind = &k;
    if (!kind)
      return Status::error(EINVAL, fmt::format("--vdev {}: unknown device type (known: emu_nvmeN, emu_netN, virtio_userN)", v.name));
    const emu::ModelType* type = emu::ModelRegistry::global().find(kind->model);
    if (!type) return Status::error(ENOENT, fmt::format("--vdev {}: the {} model is not built in", v.name, kind->model));
    emu::ModelArgs args;
    for (auto& [k, val] : v.args) {
      if (!args.emplace(k, val).second) return Status::error(EINVAL, fmt::format("--vdev {}: {} given twice", v.name, k));
    }
    // peer=emu_netY names the other port; the model links ports that name the same wire.
    if (auto it = args.find("peer"); it != args.end() && kind->model == "virtio-net") {
      const std::string& peer = it->second;
      bool found = std::any_of(cfg_.vdevs.begin(), cfg_.vdevs.end(), [&](const VdevSpec& o) { return o.name == peer; });
      if (!found || peer == v.name)
        return Status::error(EINVAL, fmt::format("--vdev {}: peer {} is not another --vdev port", v.name, peer));
      it->second = fmt::format("{}~{}", std::min(v.name, peer), std::max(v.name, peer));
    }
    auto model = type->create(args);
    if (!model) return Status::error(model.status().code(), fmt::format("--vdev {}: {}", v.name, model.status().message()));
    auto server = emu::Server::create(std::move(model.value()));
    if (!server) return Status::error(server.status().code(), fmt::format("--vdev {}: {}", v.name, server.status().message()));
    auto fd = (*server)->connect();
    if (!fd) return Status::error(fd.status().code(), fmt::format("--vdev {}: {}", v.name, fd.status().message()));
    emulated_->servers.push_back(std::move(server.value()));
    auto dev = iommu::open_vfio_user_fd(fd.value(), v.name, *dma_, opts);
    if (!dev) return Status::error(dev.status().code(), fmt::format("--vdev {}: {}", v.name, dev.status().message()));
    UVIO_TRY(add(v.name, std::move(dev.value())));
  }
  return Status::ok();
}

Result<std::unique_ptr<Runtime>> Runtime::start(const EalConfig& cfg) {
  log::set_global_level(cfg.log_level);
  for (auto& [comp, level] : cfg.component_log_levels) log::set_component_level(comp, level);
  std::unique_ptr<Runtime> rt(new Runtime(cfg));
  auto mem = Memory::create(cfg.mem);
  if (!mem) return mem.status();
  rt->memory_ = std::move(mem.value());
  auto intr = InterruptLoop::create();
  if (!intr) return intr.status();
  rt->interrupts_ = std::move(intr.value());
  auto lc = LcoreSet::start(cfg.lcores, cfg.main_lcore);
  if (!lc) return lc.status();
  rt->lcores_ = std::move(lc.value());
  rt->dma_ = std::make_unique<iommu::DmaSpace>(*rt->memory_);
  rt->emulated_ = std::make_unique<Emulated>();
  UVIO_TRY(rt->open_devices());
  UVIO_TRY(rt->start_control());
  return rt;
}

// An explicit --control-socket that cannot be had stops the start; the default path is
// a convenience, and many processes of one prefix may run at once (tests do): the second
// one goes on without a socket and says how to get one.
Status Runtime::start_control() {
  const std::string& asked = cfg_.control_socket;
  if (asked == "none") return Status::ok();
  std::string app = cfg_.app_name.empty() ? "uvio" : cfg_.app_name;
  if (!asked.empty()) {
    auto sock = ControlSocket::start(asked, app);
    if (!sock)
      return Status::error(sock.status().code(), fmt::format("--control-socket {}: {}", asked, sock.status().message()));
    control_ = std::move(sock.value());
  } else {
    std::string path = default_control_path(cfg_.mem.file_prefix);
    Status dir = make_private_dirs(path.substr(0, path.find_last_of('/')));
    Result<std::unique_ptr<ControlSocket>> sock = dir.is_ok() ? ControlSocket::start(path, app) : Result<std::unique_ptr<ControlSocket>>(dir);
    if (!sock) {
      if (sock.status().code() == EADDRINUSE)
        UVIO_LOG(Warning, kLog, "no control socket: {}; give this process its own --file-prefix (or "
                 "--control-socket PATH) to reach it with uvio-migrate", sock.status().message());
      else
        UVIO_LOG(Warning, kLog, "no control socket at {}: {}", path, sock.status().describe());
      return Status::ok();
    }
    control_ = std::move(sock.value());
  }
  control_->add("runtime.info", "the application, its lcores, memory and devices",
                [this](std::string_view) { return Result<std::string>(runtime_info(*this)); });
  return Status::ok();
}

EalApp eal_init_or_exit(int argc, char** argv, std::string_view app_usage, const std::function<void(EalConfig&)>& adjust) {
  const char* prog = argc > 0 ? argv[0] : "uvio";
  auto cfg = eal_parse(argc, argv);
  if (!cfg) {
    std::fprintf(stderr, "%s: %s\n", prog, cfg.status().message().c_str());
    std::exit(2);
  }
  if (cfg->help) {
    std::printf("Usage: %s [EAL options] -- [application options]\n\n%s\n%.*s", prog, eal_usage().c_str(),
                static_cast<int>(app_usage.size()), app_usage.data());
    std::exit(0);
  }
  if (cfg->version) {
    std::printf("uvio %s\n", UVIO_VERSION);
    std::exit(0);
  }
  if (adjust) adjust(cfg.value());
  auto rt = Runtime::start(cfg.value());
  if (!rt) {
    std::fprintf(stderr, "%s: cannot start: %s\n", prog, rt.status().message().c_str());
    std::exit(1);
  }
  EalApp app;
  app.runtime = std::move(rt.value());
  // The application sees argv[0] followed by what came after "--".
  int first = cfg->app_args_index;
  if (first > 1 && first <= argc) argv[first - 1] = argv[0];
  app.argv = argv + (first - 1);
  app.argc = argc - (first - 1);
  return app;
}

}  // namespace uvio
