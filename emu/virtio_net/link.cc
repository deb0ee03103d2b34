#include "emu/virtio_net/link.h"

#include <fmt/format.h>

#include <bit>
#include <map>
#include <mutex>

namespace uvio::emu::virtio_net {

FrameRing::FrameRing(uint32_t slots, uint32_t frame_bytes)
    : mask_(slots - 1), frame_bytes_(frame_bytes), frames_(size_t{slots} * frame_bytes), lens_(slots) {}

std::byte* FrameRing::reserve() {
  uint32_t head = head_.load(std::memory_order_relaxed);
  if (head - tail_.load(std::memory_order_acquire) > mask_) return nullptr;
  return frames_.data() + size_t{head & mask_} * frame_bytes_;
}

void FrameRing::commit(uint32_t len) {
  uint32_t head = head_.load(std::memory_order_relaxed);
  lens_[head & mask_] = len;
  head_.store(head + 1, std::memory_order_release);
}

const std::byte* FrameRing::peek(uint32_t* len) {
  uint32_t tail = tail_.load(std::memory_order_relaxed);
  if (tail == head_.load(std::memory_order_acquire)) return nullptr;
  *len = lens_[tail & mask_];
  return frames_.data() + size_t{tail & mask_} * frame_bytes_;
}

void FrameRing::release() { tail_.store(tail_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

void FrameRing::clear() { tail_.store(head_.load(std::memory_order_acquire), std::memory_order_release); }

Link::Link(uint32_t directions, uint32_t queue_pairs, uint32_t slots, uint32_t frame_bytes)
    : queue_pairs_(queue_pairs == 0 ? 1 : queue_pairs) {
  directions_.resize(directions);
  for (auto& rings : directions_)
    for (uint32_t i = 0; i < queue_pairs_; i++)
      rings.push_back(std::make_unique<FrameRing>(std::bit_ceil(slots), frame_bytes));
  present_[0].store(true);
  present_[1].store(directions == 2);
}

std::shared_ptr<Link> Link::back_to_back(uint32_t queue_pairs, uint32_t frame_bytes, uint32_t slots) {
  return std::make_shared<Link>(2, queue_pairs, slots, frame_bytes);
}

std::shared_ptr<Link> Link::loopback(uint32_t queue_pairs, uint32_t frame_bytes, uint32_t slots) {
  return std::make_shared<Link>(1, queue_pairs, slots, frame_bytes);
}

bool Link::peer_present(int end) const {
  if (is_loopback()) return true;
  return present_[1 - end].load(std::memory_order_acquire);
}

namespace {
std::mutex named_links_lock;
std::map<std::string, std::weak_ptr<Link>>& named_links() {
  static std::map<std::string, std::weak_ptr<Link>> links;
  return links;
}
}  // namespace

Result<std::pair<std::shared_ptr<Link>, int>> Link::join(const std::string& name, uint32_t queue_pairs,
                                                         uint32_t frame_bytes) {
  if (name.empty()) return Status::error(EINVAL, "virtio-net: peer= needs a link name");
  std::lock_guard guard(named_links_lock);
  auto& links = named_links();
  auto it = links.find(name);
  std::shared_ptr<Link> link = it == links.end() ? nullptr : it->second.lock();
  if (!link) {
    link = std::make_shared<Link>(2, queue_pairs, 256, frame_bytes);
    link->name_ = name;
    link->present_[1].store(false, std::memory_order_release);
    links[name] = link;
    return std::pair{link, 0};
  }
  if (frame_bytes > link->frame_bytes())
    return Status::error(EINVAL, fmt::format("virtio-net: link '{}' carries frames up to {} bytes, this port sends "
                                             "up to {}; give both ports the same mtu=",
                                             name, link->frame_bytes(), frame_bytes));
  for (int end = 0; end < 2; end++) {
    if (!link->present_[end].load(std::memory_order_acquire)) {
      link->present_[end].store(true, std::memory_order_release);
      return std::pair{link, end};
    }
  }
  return Status::error(EBUSY, fmt::format("virtio-net: link '{}' already connects two ports; "
                                          "pick another peer= name", name));
}

void Link::leave(int end) {
  if (is_loopback()) return;
  std::lock_guard guard(named_links_lock);
  present_[end].store(false, std::memory_order_release);
}

}  // namespace uvio::emu::virtio_net
