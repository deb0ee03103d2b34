// Every uvio process answers on a control socket, as DPDK's telemetry socket: a UNIX
// stream socket at /run/uvio/<file-prefix>/control.sock (or $XDG_RUNTIME_DIR/uvio/...
// when /run is not writable), or --control-socket=PATH. A request is one line of JSON
// {"cmd": "name", ...arguments}; the reply is one line of JSON, {"ok": true, ...} or
// {"ok": false, "error": "why"}. uvio-migrate and scripts speak it; `socat` does too.
#pragma once

#include <uvio/status.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace uvio {

class ControlSocket {
 public:
  // Handlers take the request's JSON text and return the reply's JSON text (without
  // "ok", which the socket adds) or a Status that becomes {"ok": false, "error": ...}.
  // They run on the socket's own thread, one request at a time.
  using Handler = std::function<Result<std::string>(std::string_view request_json)>;

  // Binds `path` (replacing a stale socket nobody answers on; EADDRINUSE when a live
  // process owns it) and starts the thread. Built-in commands: "help" (the commands and
  // their one-line descriptions), "version", "pid", "app".
  static Result<std::unique_ptr<ControlSocket>> start(std::string path, std::string app_name);
  ~ControlSocket();  // stops the thread and removes the socket file

  void add(std::string cmd, std::string description, Handler handler);
  // Unregisters `cmd` and waits for a call of it that is running on the socket's thread,
  // so that what the handler captured may be destroyed when this returns. (From inside a
  // handler it does not wait.)
  void remove(const std::string& cmd);
  const std::string& path() const;

 private:
  struct Impl;
  explicit ControlSocket(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The default path for a --file-prefix.
std::string default_control_path(std::string_view file_prefix);

// Client side: sends one request line and returns the reply line (ECONNREFUSED/ENOENT
// when no process listens at `path`).
Result<std::string> control_request(const std::string& path, std::string_view request_json,
                                    int timeout_ms = 5000);

}  // namespace uvio
