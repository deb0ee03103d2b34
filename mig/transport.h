// Byte channels for the migration stream: TCP ("tcp:HOST:PORT") and UNIX stream
// sockets ("unix:/path"). Both ends of a migration run the same code over either.
#pragma once

#include <uvio/status.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace uvio::mig {

class Channel {
 public:
  virtual ~Channel() = default;
  virtual Status write_all(const void* buf, size_t len) = 0;
  // Reads exactly len bytes: ECONNRESET when the peer closes first, ETIMEDOUT after
  // timeout_ms without progress (0 = wait forever).
  virtual Status read_exact(void* buf, size_t len, int timeout_ms = 0) = 0;
  // Makes a blocked read or write on another thread return ECANCELED (cancel).
  virtual void shutdown() = 0;
  virtual std::string peer() const = 0;
};

// "tcp:HOST:PORT" (HOST a name or address, [v6] in brackets) or "unix:PATH".
struct Address {
  enum class Kind { Tcp, Unix } kind = Kind::Tcp;
  std::string host;  // tcp
  uint16_t port = 0; // tcp
  std::string path;  // unix
};
Result<Address> parse_address(std::string_view text);

// A channel over a connected stream socket the caller already has (a socketpair in
// tests, a socket handed over by a supervisor); the channel owns and closes `fd`.
std::unique_ptr<Channel> channel_from_fd(int fd, std::string peer);

Result<std::unique_ptr<Channel>> connect(std::string_view address, int timeout_ms = 10000);

class Listener {
 public:
  static Result<std::unique_ptr<Listener>> listen(std::string_view address);
  virtual ~Listener() = default;
  // ETIMEDOUT after timeout_ms (0 = wait forever).
  virtual Result<std::unique_ptr<Channel>> accept(int timeout_ms = 0) = 0;
  virtual std::string address() const = 0;  // with the port chosen when 0 was asked
};

}  // namespace uvio::mig
