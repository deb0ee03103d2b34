// Errors on the control path are values: an errno and a sentence a person can act on.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace uvio {

class [[nodiscard]] Status {
 public:
  Status() = default;  // success
  static Status ok() { return Status(); }
  static Status error(int err, std::string message) { return Status(err == 0 ? EIO : err, std::move(message)); }

  bool is_ok() const { return err_ == 0; }
  explicit operator bool() const { return is_ok(); }
  int code() const { return err_; }  // a positive errno, 0 on success
  const std::string& message() const { return message_; }
  // "message (strerror)" for logs and error lines.
  std::string describe() const;

 private:
  Status(int err, std::string message) : err_(err), message_(std::move(message)) {}
  int err_ = 0;
  std::string message_;
};

// A value or the Status that says why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}   // NOLINT
  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const Status& status() const {
    static const Status success;
    return is_ok() ? success : std::get<1>(v_);
  }

 private:
  std::variant<T, Status> v_;
};

// Status::error(errno, ...) with the current errno captured.
Status errno_status(std::string message);

}  // namespace uvio

#define UVIO_TRY(expr)                          \
  do {                                          \
    ::uvio::Status uvio_try_status_ = (expr);   \
    if (!uvio_try_status_) return uvio_try_status_; \
  } while (0)
