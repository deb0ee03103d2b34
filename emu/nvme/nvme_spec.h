// NVMe 1.4 definitions the emulated controller needs: register offsets and fields,
// opcodes, status codes, queue entry layouts. Section numbers are NVMe Base 1.4.
#pragma once

#include <cstdint>

namespace uvio::emu::nvme {

// §3.1 Controller registers (BAR0).
inline constexpr uint64_t kRegCap = 0x00;     // Controller Capabilities, 64-bit
inline constexpr uint64_t kRegVs = 0x08;      // Version
inline constexpr uint64_t kRegIntms = 0x0c;   // Interrupt Mask Set
inline constexpr uint64_t kRegIntmc = 0x10;   // Interrupt Mask Clear
inline constexpr uint64_t kRegCc = 0x14;      // Controller Configuration
inline constexpr uint64_t kRegCsts = 0x1c;    // Controller Status
inline constexpr uint64_t kRegNssr = 0x20;    // NVM Subsystem Reset (not supported: reads 0)
inline constexpr uint64_t kRegAqa = 0x24;     // Admin Queue Attributes
inline constexpr uint64_t kRegAsq = 0x28;     // Admin SQ Base Address, 64-bit
inline constexpr uint64_t kRegAcq = 0x30;     // Admin CQ Base Address, 64-bit
inline constexpr uint64_t kRegDoorbells = 0x1000;  // §3.1 SQyTDBL at 0x1000 + (2y) * (4 << DSTRD)

inline constexpr uint32_t kVersion14 = 0x00010400;  // §3.1.2: MJR 1, MNR 4, TER 0

// §3.1.1 CAP fields.
inline constexpr unsigned kCapMqesShift = 0;     // 15:0, 0's based
inline constexpr unsigned kCapCqrShift = 16;     // contiguous queues required
inline constexpr unsigned kCapToShift = 24;      // 31:24, 500 ms units
inline constexpr unsigned kCapDstrdShift = 32;   // 35:32
inline constexpr unsigned kCapCssShift = 37;     // 44:37, bit 37 = NVM command set
inline constexpr unsigned kCapMpsminShift = 48;  // 51:48, 2^(12 + n)
inline constexpr unsigned kCapMpsmaxShift = 52;  // 55:52

// §3.1.5 CC fields.
inline constexpr uint32_t kCcEn = 1u << 0;
inline constexpr unsigned kCcCssShift = 4;      // 6:4, 000b = NVM command set
inline constexpr unsigned kCcMpsShift = 7;      // 10:7
inline constexpr unsigned kCcAmsShift = 11;     // 13:11, 000b = round robin
inline constexpr unsigned kCcShnShift = 14;     // 15:14
inline constexpr unsigned kCcIosqesShift = 16;  // 19:16
inline constexpr unsigned kCcIocqesShift = 20;  // 23:20

// §3.1.6 CSTS fields.
inline constexpr uint32_t kCstsRdy = 1u << 0;
inline constexpr uint32_t kCstsCfs = 1u << 1;
inline constexpr unsigned kCstsShstShift = 2;  // 3:2
inline constexpr uint32_t kShstComplete = 2;   // 10b: shutdown processing complete

// §3.1.8 AQA: ASQS 11:0, ACQS 27:16, both 0's based.
inline constexpr uint32_t kAqaSizeMask = 0xfff;

// Admin command opcodes.
enum AdminOpcode : uint8_t {
  kAdminDeleteSq = 0x00,
  kAdminCreateSq = 0x01,
  kAdminGetLogPage = 0x02,
  kAdminDeleteCq = 0x04,
  kAdminCreateCq = 0x05,
  kAdminIdentify = 0x06,
  kAdminAbort = 0x08,
  kAdminSetFeatures = 0x09,
  kAdminGetFeatures = 0x0a,
  kAdminAsyncEvent = 0x0c,
  kAdminDoorbellBufferConfig = 0x7c,
};

// NVM command set opcodes.
enum IoOpcode : uint8_t {
  kIoFlush = 0x00,
  kIoWrite = 0x01,
  kIoRead = 0x02,
  kIoWriteZeroes = 0x08,
  kIoDatasetManagement = 0x09,
};

// §4.6.1.2 Status Code Type.
enum StatusType : uint8_t { kSctGeneric = 0, kSctCommandSpecific = 1 };

// §4.6.1.2.1 Generic command status (SCT 0).
enum GenericStatus : uint8_t {
  kScSuccess = 0x00,
  kScInvalidOpcode = 0x01,
  kScInvalidField = 0x02,
  kScCommandIdConflict = 0x03,
  kScDataTransferError = 0x04,
  kScInternalError = 0x06,
  kScAbortRequested = 0x07,
  kScAbortedSqDeleted = 0x08,
  kScInvalidNamespace = 0x0b,
  kScCommandSequenceError = 0x0c,
  kScPrpOffsetInvalid = 0x13,
  kScLbaOutOfRange = 0x80,
};

// §4.6.1.2.2 Command specific status (SCT 1).
enum CommandSpecificStatus : uint8_t {
  kScCompletionQueueInvalid = 0x00,
  kScInvalidQueueId = 0x01,
  kScInvalidQueueSize = 0x02,
  kScAbortLimitExceeded = 0x03,
  kScAsyncEventLimitExceeded = 0x05,
  kScInvalidInterruptVector = 0x08,
  kScInvalidLogPage = 0x09,
  kScInvalidQueueDeletion = 0x0c,
  kScFeatureNotSaveable = 0x0d,
};

// The 15-bit Status Field of a completion (§4.6.1): SC 7:0, SCT 10:8, DNR 14.
struct CompletionStatus {
  uint16_t field = 0;
  static constexpr CompletionStatus success() { return {}; }
  static constexpr CompletionStatus generic(uint8_t sc, bool dnr = true) {
    return {static_cast<uint16_t>(sc | (dnr ? 1u << 14 : 0))};
  }
  static constexpr CompletionStatus specific(uint8_t sc, bool dnr = true) {
    return {static_cast<uint16_t>(sc | kSctCommandSpecific << 8 | (dnr ? 1u << 14 : 0))};
  }
  constexpr bool ok() const { return field == 0; }
  constexpr uint8_t code() const { return field & 0xff; }
  constexpr uint8_t type() const { return (field >> 8) & 0x7; }
};

// §4.2 Submission Queue Entry, 64 bytes.
struct SubmissionEntry {
  uint8_t opcode;
  uint8_t flags;  // FUSE 1:0, PSDT 7:6
  uint16_t cid;
  uint32_t nsid;
  uint32_t cdw2;
  uint32_t cdw3;
  uint64_t mptr;
  uint64_t prp1;
  uint64_t prp2;
  uint32_t cdw10;
  uint32_t cdw11;
  uint32_t cdw12;
  uint32_t cdw13;
  uint32_t cdw14;
  uint32_t cdw15;
};
static_assert(sizeof(SubmissionEntry) == 64);

// §4.6 Completion Queue Entry, 16 bytes.
struct CompletionEntry {
  uint32_t dw0;
  uint32_t dw1;
  uint16_t sq_head;
  uint16_t sq_id;
  uint16_t cid;
  uint16_t status;  // bit 0: phase tag, 15:1 status field
};
static_assert(sizeof(CompletionEntry) == 16);

inline constexpr uint32_t kSqEntryShift = 6;  // 64-byte entries (SQES = 6)
inline constexpr uint32_t kCqEntryShift = 4;  // 16-byte entries (CQES = 4)

// Get Log Page identifiers.
inline constexpr uint8_t kLogErrorInfo = 0x01;
inline constexpr uint8_t kLogSmartHealth = 0x02;
inline constexpr uint8_t kLogFirmwareSlot = 0x03;

// Set/Get Features identifiers.
inline constexpr uint8_t kFeatArbitration = 0x01;
inline constexpr uint8_t kFeatPowerManagement = 0x02;
inline constexpr uint8_t kFeatTemperatureThreshold = 0x04;
inline constexpr uint8_t kFeatVolatileWriteCache = 0x06;
inline constexpr uint8_t kFeatNumberOfQueues = 0x07;
inline constexpr uint8_t kFeatInterruptCoalescing = 0x08;
inline constexpr uint8_t kFeatAsyncEventConfig = 0x0b;

// Identify CNS values.
inline constexpr uint8_t kCnsNamespace = 0x00;
inline constexpr uint8_t kCnsController = 0x01;
inline constexpr uint8_t kCnsActiveNamespaces = 0x02;
inline constexpr uint8_t kCnsNamespaceDescriptors = 0x03;

// Asynchronous event types and the error information it names.
inline constexpr uint8_t kAsyncEventError = 0x0;
inline constexpr uint8_t kAsyncInfoInvalidDoorbell = 0x00;      // write to an invalid doorbell register
inline constexpr uint8_t kAsyncInfoInvalidDoorbellValue = 0x01;  // invalid doorbell write value

inline constexpr uint32_t kIdentifySize = 4096;

}  // namespace uvio::emu::nvme
