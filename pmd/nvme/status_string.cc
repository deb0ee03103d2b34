// Completion status codes in words (NVMe 1.4 §4.6.1.2, Figures 126-131).
#include <uvio/nvme.h>

#include <fmt/format.h>

namespace uvio::nvme {
namespace {

const char* generic_name(uint8_t sc) {
  switch (sc) {  // §4.6.1.2.1, Figure 127 and 128
    case 0x00: return "Successful Completion";
    case 0x01: return "Invalid Command Opcode";
    case 0x02: return "Invalid Field in Command";
    case 0x03: return "Command ID Conflict";
    case 0x04: return "Data Transfer Error";
    case 0x05: return "Commands Aborted due to Power Loss Notification";
    case 0x06: return "Internal Error";
    case 0x07: return "Command Abort Requested";
    case 0x08: return "Command Aborted due to SQ Deletion";
    case 0x09: return "Command Aborted due to Failed Fused Command";
    case 0x0a: return "Command Aborted due to Missing Fused Command";
    case 0x0b: return "Invalid Namespace or Format";
    case 0x0c: return "Command Sequence Error";
    case 0x0d: return "Invalid SGL Segment Descriptor";
    case 0x0e: return "Invalid Number of SGL Descriptors";
    case 0x0f: return "Data SGL Length Invalid";
    case 0x10: return "Metadata SGL Length Invalid";
    case 0x11: return "SGL Descriptor Type Invalid";
    case 0x12: return "Invalid Use of Controller Memory Buffer";
    case 0x13: return "PRP Offset Invalid";
    case 0x14: return "Atomic Write Unit Exceeded";
    case 0x15: return "Operation Denied";
    case 0x16: return "SGL Offset Invalid";
    case 0x18: return "Host Identifier Inconsistent Format";
    case 0x19: return "Keep Alive Timer Expired";
    case 0x1a: return "Keep Alive Timeout Invalid";
    case 0x1b: return "Command Aborted due to Preempt and Abort";
    case 0x1c: return "Sanitize Failed";
    case 0x1d: return "Sanitize In Progress";
    case 0x1e: return "SGL Data Block Granularity Invalid";
    case 0x1f: return "Command Not Supported for Queue in CMB";
    case 0x20: return "Namespace is Write Protected";
    case 0x21: return "Command Interrupted";
    case 0x22: return "Transient Transport Error";
    case 0x80: return "LBA Out of Range";
    case 0x81: return "Capacity Exceeded";
    case 0x82: return "Namespace Not Ready";
    case 0x83: return "Reservation Conflict";
    case 0x84: return "Format In Progress";
    default: return nullptr;
  }
}

const char* command_specific_name(uint8_t sc) {
  switch (sc) {  // §4.6.1.2.2, Figure 129 and 130
    case 0x00: return "Completion Queue Invalid";
    case 0x01: return "Invalid Queue Identifier";
    case 0x02: return "Invalid Queue Size";
    case 0x03: return "Abort Command Limit Exceeded";
    case 0x05: return "Asynchronous Event Request Limit Exceeded";
    case 0x06: return "Invalid Firmware Slot";
    case 0x07: return "Invalid Firmware Image";
    case 0x08: return "Invalid Interrupt Vector";
    case 0x09: return "Invalid Log Page";
    case 0x0a: return "Invalid Format";
    case 0x0c: return "Invalid Queue Deletion";
    case 0x0d: return "Feature Identifier Not Saveable";
    case 0x0e: return "Feature Not Changeable";
    case 0x0f: return "Feature Not Namespace Specific";
    case 0x14: return "Overlapping Range";
    case 0x15: return "Namespace Insufficient Capacity";
    case 0x16: return "Namespace Identifier Unavailable";
    case 0x18: return "Namespace Already Attached";
    case 0x19: return "Namespace Is Private";
    case 0x1a: return "Namespace Not Attached";
    case 0x1b: return "Thin Provisioning Not Supported";
    case 0x1c: return "Controller List Invalid";
    case 0x80: return "Conflicting Attributes";
    case 0x81: return "Invalid Protection Information";
    case 0x82: return "Attempted Write to Read Only Range";
    default: return nullptr;
  }
}

const char* media_name(uint8_t sc) {
  switch (sc) {  // §4.6.1.2.3, Figure 131
    case 0x80: return "Write Fault";
    case 0x81: return "Unrecovered Read Error";
    case 0x82: return "End-to-end Guard Check Error";
    case 0x83: return "End-to-end Application Tag Check Error";
    case 0x84: return "End-to-end Reference Tag Check Error";
    case 0x85: return "Compare Failure";
    case 0x86: return "Access Denied";
    case 0x87: return "Deallocated or Unwritten Logical Block";
    default: return nullptr;
  }
}

const char* path_name(uint8_t sc) {
  switch (sc) {  // §4.6.1.2.4
    case 0x00: return "Internal Path Error";
    case 0x01: return "Asymmetric Access Persistent Loss";
    case 0x02: return "Asymmetric Access Inaccessible";
    case 0x03: return "Asymmetric Access Transition";
    case 0x60: return "Controller Pathing Error";
    case 0x70: return "Host Pathing Error";
    case 0x71: return "Command Aborted By Host";
    default: return nullptr;
  }
}

}  // namespace

std::string nvme_status_string(IoStatus status) {
  uint8_t sc = status & 0xff;
  uint8_t sct = (status >> 8) & 0x7;
  const char* name = nullptr;
  const char* type = "reserved type";
  switch (sct) {
    case 0: name = generic_name(sc), type = "generic"; break;
    case 1: name = command_specific_name(sc), type = "command specific"; break;
    case 2: name = media_name(sc), type = "media error"; break;
    case 3: name = path_name(sc), type = "path"; break;
    case 7: type = "vendor specific"; break;
    default: break;
  }
  return fmt::format("{} ({}, sc {:#04x}{}{})", name ? name : "Unknown Status", type, sc,
                     status & (1u << 14) ? ", do not retry" : "", status & (1u << 13) ? ", more in log" : "");
}

}  // namespace uvio::nvme
