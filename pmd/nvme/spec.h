// The parts of the NVM Express Base Specification 1.4 the driver uses: controller
// registers, queue entry layouts, opcodes and the Identify fields it reads. Section
// numbers beside each definition are NVMe Base 1.4.
#pragma once

#include <cstdint>

namespace uvio::nvme::spec {

// §3.1 Controller registers, BAR0 offsets.
inline constexpr uint64_t kRegCap = 0x00;   // §3.1.1 Controller Capabilities, 64-bit
inline constexpr uint64_t kRegVs = 0x08;    // §3.1.2 Version
inline constexpr uint64_t kRegIntms = 0x0c; // §3.1.3 Interrupt Mask Set
inline constexpr uint64_t kRegCc = 0x14;    // §3.1.5 Controller Configuration
inline constexpr uint64_t kRegCsts = 0x1c;  // §3.1.6 Controller Status
inline constexpr uint64_t kRegAqa = 0x24;   // §3.1.8 Admin Queue Attributes
inline constexpr uint64_t kRegAsq = 0x28;   // §3.1.9 Admin SQ Base Address, 64-bit
inline constexpr uint64_t kRegAcq = 0x30;   // §3.1.10 Admin CQ Base Address, 64-bit
// §3.1.24/§3.1.25: SQyTDBL at 0x1000 + (2y) * (4 << DSTRD), CQyHDBL at 0x1000 + (2y + 1) * (4 << DSTRD).
inline constexpr uint64_t kRegDoorbells = 0x1000;

// §3.1.1 CAP fields.
inline uint32_t cap_mqes(uint64_t cap) { return static_cast<uint32_t>(cap & 0xffff) + 1; }  // 15:0, 0's based
inline uint32_t cap_to_500ms(uint64_t cap) { return static_cast<uint32_t>(cap >> 24) & 0xff; }  // 31:24
inline uint32_t cap_dstrd(uint64_t cap) { return static_cast<uint32_t>(cap >> 32) & 0xf; }     // 35:32
inline bool cap_css_nvm(uint64_t cap) { return (cap >> 37) & 1; }                              // 44:37, bit 37
inline uint32_t cap_mpsmin(uint64_t cap) { return static_cast<uint32_t>(cap >> 48) & 0xf; }    // 51:48
inline uint32_t cap_mpsmax(uint64_t cap) { return static_cast<uint32_t>(cap >> 52) & 0xf; }    // 55:52

// §3.1.5 CC fields.
inline constexpr uint32_t kCcEnable = 1u << 0;      // EN
inline constexpr unsigned kCcCssShift = 4;          // 6:4, 000b = NVM command set
inline constexpr unsigned kCcMpsShift = 7;          // 10:7, page size 2^(12 + MPS)
inline constexpr unsigned kCcAmsShift = 11;         // 13:11, 000b = round robin
inline constexpr unsigned kCcIosqesShift = 16;      // 19:16, log2 of the SQ entry size
inline constexpr unsigned kCcIocqesShift = 20;      // 23:20, log2 of the CQ entry size

// §3.1.6 CSTS fields.
inline constexpr uint32_t kCstsReady = 1u << 0;          // RDY
inline constexpr uint32_t kCstsFatal = 1u << 1;          // CFS: Controller Fatal Status
inline constexpr uint32_t kCstsAllOnes = 0xffffffffu;    // a read from a device that is gone

// §4.2 Submission Queue Entry, 64 bytes.
struct SubmissionEntry {
  uint8_t opcode;
  uint8_t flags;  // FUSE 1:0, PSDT 7:6 (00b: PRPs)
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
  uint32_t dw0;       // command specific
  uint32_t dw1;
  uint16_t sq_head;   // SQHD: how far the controller has consumed the SQ
  uint16_t sq_id;
  uint16_t cid;
  uint16_t status;    // bit 0: phase tag; 15:1: status field (§4.6.1)
};
static_assert(sizeof(CompletionEntry) == 16);

inline constexpr uint32_t kSqEntryLog2 = 6;  // IOSQES: 64-byte entries
inline constexpr uint32_t kCqEntryLog2 = 4;  // IOCQES: 16-byte entries
inline constexpr uint32_t kPageBytes = 4096; // CC.MPS = 0
inline constexpr uint32_t kPrpsPerPage = kPageBytes / 8;

// §5 Admin command opcodes.
enum AdminOpcode : uint8_t {
  kAdminDeleteSq = 0x00,              // §5.7
  kAdminCreateSq = 0x01,              // §5.4
  kAdminDeleteCq = 0x04,              // §5.6
  kAdminCreateCq = 0x05,              // §5.3
  kAdminIdentify = 0x06,              // §5.15
  kAdminAbort = 0x08,                 // §5.1
  kAdminSetFeatures = 0x09,           // §5.21
  kAdminDoorbellBufferConfig = 0x7c,  // §5.8
};

// §6 NVM command set opcodes.
enum IoOpcode : uint8_t {
  kIoFlush = 0x00,              // §6.8
  kIoWrite = 0x01,              // §6.15
  kIoRead = 0x02,               // §6.9
  kIoWriteZeroes = 0x08,        // §6.16
  kIoDatasetManagement = 0x09,  // §6.7
};

// §5.15.1 Identify CNS values.
inline constexpr uint32_t kCnsNamespace = 0x00;
inline constexpr uint32_t kCnsController = 0x01;
inline constexpr uint32_t kCnsActiveNamespaces = 0x02;
inline constexpr uint32_t kIdentifyBytes = 4096;

// §5.15.2.1 Identify Controller data structure, byte offsets.
inline constexpr uint32_t kIdSerial = 4;      // SN, 20 ASCII bytes
inline constexpr uint32_t kIdModel = 24;      // MN, 40 ASCII bytes
inline constexpr uint32_t kIdFirmware = 64;   // FR, 8 ASCII bytes
inline constexpr uint32_t kIdMdts = 77;       // Maximum Data Transfer Size, 2^n minimum pages, 0 = no limit
inline constexpr uint32_t kIdOacs = 256;      // Optional Admin Command Support, 16-bit
inline constexpr uint16_t kOacsDoorbellBuffer = 1u << 8;
inline constexpr uint32_t kIdAcl = 258;       // Abort Command Limit, 0's based
inline constexpr uint32_t kIdNn = 516;        // Number of Namespaces, 32-bit
inline constexpr uint32_t kIdOncs = 520;      // Optional NVM Command Support, 16-bit
inline constexpr uint16_t kOncsDsm = 1u << 2;
inline constexpr uint16_t kOncsWriteZeroes = 1u << 3;
inline constexpr uint32_t kIdVwc = 525;       // Volatile Write Cache, bit 0 present

// §5.15.2.2 Identify Namespace data structure, byte offsets.
inline constexpr uint32_t kNsSize = 0;        // NSZE, 64-bit, in logical blocks
inline constexpr uint32_t kNsCapacity = 8;    // NCAP
inline constexpr uint32_t kNsNlbaf = 25;      // number of LBA formats, 0's based
inline constexpr uint32_t kNsFlbas = 26;      // 3:0 format in use
inline constexpr uint32_t kNsLbaf0 = 128;     // LBA Format 0; each 4 bytes: MS 15:0, LBADS 23:16

// §5.21.1.7 Number of Queues feature.
inline constexpr uint32_t kFeatureNumberOfQueues = 0x07;

// §5.3 Create I/O Completion Queue CDW11 bits.
inline constexpr uint32_t kQueuePhysicallyContiguous = 1u << 0;  // PC
inline constexpr uint32_t kCqInterruptsEnabled = 1u << 1;        // IEN, IV in 31:16

// §6.7 Dataset Management: CDW11 attribute Deallocate, and the 16-byte range.
inline constexpr uint32_t kDsmDeallocate = 1u << 2;
struct DsmRangeEntry {
  uint32_t context_attributes;
  uint32_t blocks;
  uint64_t start_lba;
};
static_assert(sizeof(DsmRangeEntry) == 16);
inline constexpr uint32_t kDsmMaxRanges = 256;

// §4.6.1 Status field (CQE DW3 31:17 shifted down by one): SC 7:0, SCT 10:8, CRD 12:11,
// M 13, DNR 14.
inline constexpr uint16_t status_field(uint16_t raw_cqe_status) { return raw_cqe_status >> 1; }
inline constexpr uint8_t status_code(uint16_t field) { return field & 0xff; }
inline constexpr uint8_t status_type(uint16_t field) { return (field >> 8) & 0x7; }
inline constexpr bool status_do_not_retry(uint16_t field) { return field & (1u << 14); }

}  // namespace uvio::nvme::spec
