#include <uvio/status.h>

#include <cstring>

namespace uvio {

std::string Status::describe() const {
  if (is_ok()) return "ok";
  return message_ + " (" + std::strerror(err_) + ")";
}

Status errno_status(std::string message) {
  int err = errno;
  return Status::error(err, std::move(message));
}

}  // namespace uvio
