// The wire between virtio-net ports: frames a port transmits are copied into a
// single-producer single-consumer ring, and the receiving port copies them into its
// RX buffers when it polls. Each direction has one ring per queue pair, written only
// by the sending port's device thread and read only by the receiving port's, so two
// ports polled from two threads share no lock; the rings are allocated when the link
// is made, never on the fast path.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <uvio/status.h>

namespace uvio::emu::virtio_net {

class FrameRing {
 public:
  // slots: a power of two; frame_bytes: the largest frame a slot holds.
  FrameRing(uint32_t slots, uint32_t frame_bytes);
  uint32_t frame_bytes() const { return frame_bytes_; }

  // Producer: a slot to fill, or nullptr when the ring is full; then commit(len).
  std::byte* reserve();
  void commit(uint32_t len);
  // Producer: a frame lost because the ring was full (the receiver is not polling).
  void count_overflow() { overflow_.store(overflow_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

  // Consumer: the oldest frame, or nullptr; then release().
  const std::byte* peek(uint32_t* len);
  void release();

  uint64_t overflow() const { return overflow_.load(std::memory_order_relaxed); }
  // Frames committed and not yet released; exact while neither side runs.
  uint32_t waiting() const {
    return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
  }
  // Drops every frame; only while neither side polls.
  void clear();

 private:
  uint32_t mask_;
  uint32_t frame_bytes_;
  std::vector<std::byte> frames_;  // slot i at i * frame_bytes_
  std::vector<uint32_t> lens_;
  alignas(64) std::atomic<uint32_t> head_{0};  // written by the producer
  alignas(64) std::atomic<uint32_t> tail_{0};  // written by the consumer
  alignas(64) std::atomic<uint64_t> overflow_{0};
};

// Two ends, 0 and 1. A back-to-back link carries end 0's TX to end 1's RX and back; a
// loopback link has one direction, end 0 transmitting to itself.
class Link {
 public:
  // frame_bytes: the largest frame either end sends (MTU + Ethernet header + VLAN tag).
  static std::shared_ptr<Link> back_to_back(uint32_t queue_pairs, uint32_t frame_bytes, uint32_t slots = 256);
  static std::shared_ptr<Link> loopback(uint32_t queue_pairs, uint32_t frame_bytes, uint32_t slots = 256);

  // The process-wide link called `name` (the `peer=` option): the first caller gets
  // end 0, the second end 1; a third, or one sending larger frames than the link was
  // made for, is refused. A link whose ends were both released disappears.
  static Result<std::pair<std::shared_ptr<Link>, int>> join(const std::string& name, uint32_t queue_pairs,
                                                            uint32_t frame_bytes);
  void leave(int end);

  uint32_t queue_pairs() const { return queue_pairs_; }
  bool is_loopback() const { return directions_.size() == 1; }
  // Rings carrying what `end` sends and what it receives, one per queue pair.
  FrameRing& tx_ring(int end, uint32_t pair) { return ring(end, pair); }
  FrameRing& rx_ring(int end, uint32_t pair) { return ring(is_loopback() ? 0 : 1 - end, pair); }
  // Whether the other end exists (a named link waiting for its second port is down).
  bool peer_present(int end) const;

  uint32_t frame_bytes() const { return directions_[0][0]->frame_bytes(); }

  Link(uint32_t directions, uint32_t queue_pairs, uint32_t slots, uint32_t frame_bytes);

 private:
  FrameRing& ring(int direction, uint32_t pair) { return *directions_[direction][pair % queue_pairs_]; }

  uint32_t queue_pairs_;
  std::vector<std::vector<std::unique_ptr<FrameRing>>> directions_;
  std::atomic<bool> present_[2];
  std::string name_;  // set for named links
};

}  // namespace uvio::emu::virtio_net
