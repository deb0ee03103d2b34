// Makes the NVMe controller available by name ("nvme", uvio-emud --nvme).
#include "emu/nvme/controller.h"
#include "emu/registry.h"

namespace uvio::emu::nvme {

Result<std::unique_ptr<DeviceModel>> make_nvme_model(const std::map<std::string, std::string>& args) {
  Result<NvmeOptions> options = parse_nvme_options(args);
  if (!options) return options.status();
  Result<std::unique_ptr<NvmeController>> ctrl = NvmeController::create(*options);
  if (!ctrl) return ctrl.status();
  return std::unique_ptr<DeviceModel>(std::move(*ctrl));
}

namespace {

const ModelRegistration kNvmeRegistration{ModelType{
    "nvme", "nvme",
    "NVMe 1.4 controller: size=64M,ns=1,lba=512|4096,file=PATH,queues=16,mqes=1024,serial=S,"
    "faults=cfs@N+timeout@N+badcid@N+phase@N+migload@N",
    make_nvme_model}};

}  // namespace
}  // namespace uvio::emu::nvme
