// Synchronous helpers for tools and tests: one command, waited for by polling (or by
// sleeping on the queue's vector in interrupt mode).
#include <uvio/nvme.h>

#include <fmt/format.h>

#include <cstring>

namespace uvio::nvme {
namespace {

struct Waiter {
  bool done = false;
  IoStatus status = 0;
};

void on_done(void* ctx, IoStatus status) {
  auto* w = static_cast<Waiter*>(ctx);
  w->status = status;
  w->done = true;
}

int errno_for(IoStatus s) {
  uint8_t sc = s & 0xff, sct = (s >> 8) & 7;
  if (sct == 0 && sc == 0x80) return ERANGE;
  if (sct == 0 && (sc == 0x01 || sc == 0x02 || sc == 0x0b)) return EINVAL;
  if (s == kStatusAbortedByHost || s == kStatusAbortRequested) return ECANCELED;
  return EIO;
}

// Completion is guaranteed: poll() runs the timeout and health checks that end every
// command, at worst with kStatusAbortedByHost after a controller reset.
template <class Submit>
Status run(QueuePair& q, const char* what, Submit submit) {
  Waiter w;
  int rc;
  while ((rc = submit(&w)) == -EAGAIN) q.poll();
  if (rc) return Status::error(-rc, fmt::format("nvme: {} on queue {} not submitted: {}", what, q.id(), strerror(-rc)));
  q.flush_submissions();
  while (!w.done)
    if (q.poll() == 0 && q.event_fd() >= 0) q.wait(10);
  if (!status_ok(w.status))
    return Status::error(errno_for(w.status),
                         fmt::format("nvme: {} on queue {} failed: {}", what, q.id(), nvme_status_string(w.status)));
  return Status::ok();
}

}  // namespace

Status sync_read(QueuePair& q, uint32_t nsid, void* buf, uint64_t lba, uint32_t blocks) {
  return run(q, "read", [&](Waiter* w) { return q.submit_read(nsid, buf, lba, blocks, on_done, w); });
}

Status sync_write(QueuePair& q, uint32_t nsid, const void* buf, uint64_t lba, uint32_t blocks) {
  return run(q, "write", [&](Waiter* w) { return q.submit_write(nsid, buf, lba, blocks, on_done, w); });
}

Status sync_flush(QueuePair& q, uint32_t nsid) {
  return run(q, "flush", [&](Waiter* w) { return q.submit_flush(nsid, on_done, w); });
}

Status sync_write_zeroes(QueuePair& q, uint32_t nsid, uint64_t lba, uint32_t blocks) {
  return run(q, "write zeroes", [&](Waiter* w) { return q.submit_write_zeroes(nsid, lba, blocks, on_done, w); });
}

Status sync_dsm(QueuePair& q, uint32_t nsid, std::span<const DsmRange> ranges, uint32_t attributes) {
  return run(q, "dataset management", [&](Waiter* w) { return q.submit_dsm(nsid, ranges, attributes, on_done, w); });
}

}  // namespace uvio::nvme
