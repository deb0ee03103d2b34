// A uvio application to migrate in tests and benchmarks. A service on a worker lcore
// writes pages of a memzone at a chosen rate: step k fills data page (k - 1) % pages
// with a pattern derived from (page, k) and then stores k in the header. From k alone
// every page's content follows, so the destination checks the whole zone exactly. A
// participant carries the step count outside runtime memory.
//
//   source:      mig_testapp [EAL] -- --to=ADDR [--rate-mib=N] [--zone-mib=N] [--warmup=STEPS]
//                  [--max-downtime=MS] [--max-passes=N] [--force] [--token=T]
//                  [--cancel-to=ADDR] [--expect=ok|fail|unmigratable] [--external]
//   destination: mig_testapp [EAL] --migrate-listen=ADDR -- [--refuse-load]
//
// Exit status: 0 when the outcome is the one expected (and, on a destination, the
// memory and participant state are exact), 1 when receive() fails, 3 on a mismatch.
// Results go to stdout as "key=value" lines.
#include <uvio/migrate.h>
#include <uvio/runtime.h>

#include "iommu/device.h"

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

namespace {

constexpr uint64_t kPage = 4096;
constexpr const char* kZone = "testapp.data";

struct Header {
  std::atomic<uint64_t> steps;  // the last step whose page is complete
  uint64_t pages;
};

uint64_t pattern_word(uint64_t page, uint64_t step, uint64_t i) {
  uint64_t x = (page + 1) * 0x9e3779b97f4a7c15ull ^ step * 0xc2b2ae3d27d4eb4full ^ i;
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 29);
}

struct Options {
  std::string to;
  uint64_t rate_mib = 50;
  uint64_t zone_mib = 8;
  uint64_t warmup = 64;
  uint32_t max_downtime = 300;
  uint32_t max_passes = 30;
  bool force = false;
  std::string token;
  std::string cancel_to;  // first migrate here and cancel it
  std::string expect = "ok";
  bool external = false;  // migrate.send comes through the control socket
  bool refuse_load = false;
};

bool parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; i++) {
    std::string_view a = argv[i];
    auto val = [&](std::string_view key, std::string* out) {
      if (a.substr(0, key.size()) != key) return false;
      *out = std::string(a.substr(key.size()));
      return true;
    };
    std::string v;
    if (val("--to=", &v)) o->to = v;
    else if (val("--rate-mib=", &v)) o->rate_mib = std::strtoull(v.c_str(), nullptr, 10);
    else if (val("--zone-mib=", &v)) o->zone_mib = std::strtoull(v.c_str(), nullptr, 10);
    else if (val("--warmup=", &v)) o->warmup = std::strtoull(v.c_str(), nullptr, 10);
    else if (val("--max-downtime=", &v)) o->max_downtime = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    else if (val("--max-passes=", &v)) o->max_passes = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    else if (val("--token=", &v)) o->token = v;
    else if (val("--expect=", &v)) o->expect = v;
    else if (a == "--force") o->force = true;
    else if (val("--cancel-to=", &v)) o->cancel_to = v;
    else if (a == "--external") o->external = true;
    else if (a == "--refuse-load") o->refuse_load = true;
    else {
      std::fprintf(stderr, "mig_testapp: unknown option %s\n", argv[i]);
      return false;
    }
  }
  return true;
}

// The writer: one page per step while under the rate.
class Dirtier {
 public:
  Dirtier(Header* h, uint64_t rate_mib) : h_(h), pages_per_sec_(rate_mib * (1 << 20) / kPage) {}
  void step() {
    if (pages_per_sec_ == 0) return;
    auto now = std::chrono::steady_clock::now();
    if (!started_) {
      started_ = true;
      t0_ = now;
    }
    double secs = std::chrono::duration<double>(now - t0_).count();
    if (double(written_) >= secs * double(pages_per_sec_)) return;
    uint64_t k = h_->steps.load(std::memory_order_relaxed) + 1;
    uint64_t page = (k - 1) % h_->pages;
    auto* w = reinterpret_cast<uint64_t*>(reinterpret_cast<std::byte*>(h_) + kPage * (1 + page));
    for (uint64_t i = 0; i < kPage / 8; i++) w[i] = pattern_word(page, k, i);
    h_->steps.store(k, std::memory_order_release);
    written_++;
  }

 private:
  Header* h_;
  uint64_t pages_per_sec_;
  bool started_ = false;
  std::chrono::steady_clock::time_point t0_;
  uint64_t written_ = 0;
};

// Every page as the writer left it after `steps` steps.
bool verify_zone(const Header* h, uint64_t steps, std::string* why) {
  for (uint64_t page = 0; page < h->pages; page++) {
    // The last step that wrote this page, 0 if none.
    uint64_t last = steps > page ? steps - (steps - 1 - page) % h->pages : 0;
    auto* w = reinterpret_cast<const uint64_t*>(reinterpret_cast<const std::byte*>(h) + kPage * (1 + page));
    for (uint64_t i = 0; i < kPage / 8; i++) {
      uint64_t want = last ? pattern_word(page, last, i) : 0;
      if (w[i] != want) {
        char buf[160];
        std::snprintf(buf, sizeof(buf), "page %" PRIu64 " word %" PRIu64 ": %#" PRIx64 ", expected %#" PRIx64
                      " (step %" PRIu64 ")", page, i, w[i], want, last);
        *why = buf;
        return false;
      }
    }
  }
  return true;
}

struct AppState {
  uint64_t steps_at_save = 0;   // host memory: what the participant carries
  std::chrono::steady_clock::time_point quiesced_at;
  bool quiesced = false;
  int resumes = 0;
};

uvio::mig::Participant make_participant(AppState& st, const Header* const* header, bool refuse_load) {
  uvio::mig::Participant p;
  p.name = "testapp";
  p.quiesce = [&st] {
    st.quiesced = true;
    st.quiesced_at = std::chrono::steady_clock::now();
    return uvio::Status::ok();
  };
  p.save = [&st, header](std::vector<uint8_t>& out) {
    if (!st.quiesced) return uvio::Status::error(EINVAL, "save before quiesce");
    st.steps_at_save = (*header)->steps.load(std::memory_order_acquire);
    const char tag[] = "testapp-v1";
    out.insert(out.end(), tag, tag + sizeof(tag));
    auto* b = reinterpret_cast<const uint8_t*>(&st.steps_at_save);
    out.insert(out.end(), b, b + 8);
    return uvio::Status::ok();
  };
  p.load = [&st, refuse_load](std::span<const uint8_t> in) {
    const char tag[] = "testapp-v1";
    if (refuse_load) return uvio::Status::error(EINVAL, "testapp: refusing the state as asked");
    if (in.size() != sizeof(tag) + 8 || std::memcmp(in.data(), tag, sizeof(tag)) != 0)
      return uvio::Status::error(EINVAL, "testapp: state of the wrong shape");
    std::memcpy(&st.steps_at_save, in.data() + sizeof(tag), 8);
    return uvio::Status::ok();
  };
  p.resume = [&st] {
    st.quiesced = false;
    st.resumes++;
  };
  return p;
}

bool wait_for_steps(const Header* h, uint64_t target, int timeout_ms) {
  for (int i = 0; i < timeout_ms; i++) {
    if (h->steps.load(std::memory_order_acquire) >= target) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

int run_destination(uvio::Runtime& rt, const Options& o) {
  AppState st;
  const Header* header = nullptr;
  uvio::mig::Migration mig(rt);
  mig.add_participant(make_participant(st, &header, o.refuse_load));
  uvio::Status s = mig.receive();
  if (!s) {
    // Whether anything of the source reached memory (a refusal must apply nothing).
    bool untouched = rt.memory().memzones().empty();
    for (const uvio::MemArea* a : rt.memory().areas())
      for (size_t i = 0; untouched && i < a->len; i += 8) untouched = *reinterpret_cast<const uint64_t*>(a->va + i) == 0;
    std::printf("receive=failed\nerror=%s\napplied=%s\n", s.message().c_str(), untouched ? "nothing" : "some");
    return 1;
  }
  const uvio::Memzone* z = rt.memory().memzone_lookup(kZone);
  if (!z) {
    std::printf("error=memzone %s missing after the migration\n", kZone);
    return 3;
  }
  auto* h = static_cast<Header*>(z->addr);
  header = h;
  uint64_t steps = h->steps.load(std::memory_order_acquire);
  std::printf("receive=ok\nsteps=%" PRIu64 "\nparticipant_steps=%" PRIu64 "\n", steps, st.steps_at_save);
  if (steps != st.steps_at_save) {
    std::printf("error=the participant says %" PRIu64 " steps, memory says %" PRIu64 "\n", st.steps_at_save, steps);
    return 3;
  }
  std::string why;
  if (h->pages * kPage + kPage != z->len || !verify_zone(h, steps, &why)) {
    std::printf("error=memory differs: %s\n", why.empty() ? "zone size" : why.c_str());
    return 3;
  }
  for (const uvio::RuntimeDevice& d : rt.devices()) {
    auto state = d.device->mig_state();
    if (!state || *state != uvio::iommu::MigState::Running) {
      std::printf("error=device %s is not RUNNING after the migration\n", d.name.c_str());
      return 3;
    }
  }
  std::printf("verified=yes\n");
  std::fflush(stdout);
  return 0;
}

int run_source(uvio::Runtime& rt, const Options& o) {
  auto zone = rt.memory().memzone_reserve(kZone, (o.zone_mib << 20) + kPage, kPage);
  if (!zone) {
    std::fprintf(stderr, "%s\n", zone.status().message().c_str());
    return 2;
  }
  auto* h = static_cast<Header*>((*zone)->addr);
  h->pages = (o.zone_mib << 20) / kPage;
  const Header* header = h;
  AppState st;
  uvio::mig::Migration mig(rt);
  mig.add_participant(make_participant(st, &header, false));
  if (uvio::Status c = mig.check_migratable(); !c) {
    std::printf("migratable=no\nerror=%s\n", c.message().c_str());
    return o.expect == "unmigratable" ? 0 : 3;
  }

  auto workers = rt.lcores().worker_lcores();
  if (workers.empty()) {
    std::fprintf(stderr, "mig_testapp: needs a worker lcore (-l 0-1)\n");
    return 2;
  }
  Dirtier dirtier(h, o.rate_mib);
  // The service uses `dirtier`: it must end before this function returns.
  struct StopServices {
    uvio::ServiceRunner& s;
    ~StopServices() { s.stop(); }
  } stop_services{rt.services()};
  rt.services().add(workers.front(), "dirtier", [&dirtier] { dirtier.step(); });
  if (uvio::Status s = rt.services().start(rt.lcores()); !s) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 2;
  }
  if (o.rate_mib && !wait_for_steps(h, o.warmup, 10000)) {
    std::fprintf(stderr, "mig_testapp: the service does not run\n");
    return 3;
  }

  uvio::mig::SendOptions so;
  so.to = o.to;
  so.max_downtime_ms = o.max_downtime;
  so.max_passes = o.max_passes;
  so.force = o.force;
  so.token = o.token;
  const uint64_t steps_at_start = h->steps.load(std::memory_order_acquire);
  const auto t_start = std::chrono::steady_clock::now();

  if (!o.cancel_to.empty()) {
    // Cancel while pre-copy runs, then show the source still works and can migrate.
    uvio::mig::SendOptions first = so;
    first.to = o.cancel_to;
    if (uvio::Status s = mig.start_send(first); !s) {
      std::printf("error=%s\n", s.message().c_str());
      return 3;
    }
    // The test's proxy stalls the stream, so pre-copy cannot finish before the cancel.
    for (int i = 0; i < 10000 && mig.progress().phase != uvio::mig::Phase::PreCopy; i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    mig.cancel();
    for (int i = 0; i < 20000; i++) {
      auto ph = mig.progress().phase;
      if (ph == uvio::mig::Phase::Cancelled || ph == uvio::mig::Phase::Failed || ph == uvio::mig::Phase::Completed) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto p = mig.progress();
    std::printf("first_phase=%s\nfirst_message=%s\n", std::string(uvio::mig::phase_name(p.phase)).c_str(),
                p.message.c_str());
    if (p.phase != uvio::mig::Phase::Cancelled) return 3;
    if (o.rate_mib && !wait_for_steps(h, h->steps.load() + 16, 10000)) {
      std::printf("error=the service did not resume after cancel\n");
      return 3;
    }
    std::printf("resumed_after_cancel=yes\n");
    std::fflush(stdout);
  }

  uvio::Status s;
  if (o.external) {
    // Started by "migrate.send" on the control socket: wait for its outcome.
    std::printf("ready=yes\n");
    std::fflush(stdout);
    for (int i = 0; i < 120000 && !mig.migrated(); i++) {
      auto ph = mig.progress().phase;
      if (ph == uvio::mig::Phase::Failed || ph == uvio::mig::Phase::Cancelled) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!mig.migrated()) s = uvio::Status::error(EIO, mig.progress().message);
  } else {
    s = mig.send(so);
  }
  auto p = mig.progress();
  std::printf("phase=%s\npass=%u\nbytes_sent=%" PRIu64 "\ndowntime_ms=%.3f\ntotal_ms=%.3f\nmessage=%s\n",
              std::string(uvio::mig::phase_name(p.phase)).c_str(), p.pass, p.bytes_sent, p.downtime_ms, p.total_ms,
              p.message.c_str());
  std::printf("steps_at_start=%" PRIu64 "\nsteps_at_pause=%" PRIu64 "\nresumes=%d\n", steps_at_start, st.steps_at_save,
              st.resumes);
  if (st.steps_at_save > steps_at_start && o.cancel_to.empty()) {
    // The rate the service achieved between the start and the pause.
    double secs = std::chrono::duration<double>(st.quiesced_at - t_start).count();
    std::printf("dirty_mib_s=%.1f\n", double(st.steps_at_save - steps_at_start) * kPage / (1 << 20) / secs);
  }
  std::fflush(stdout);
  if (o.expect == "ok") return s && mig.migrated() ? 0 : 3;
  // A failure: the source must go on as before.
  if (s || mig.migrated()) return 3;
  if (o.rate_mib && !wait_for_steps(h, h->steps.load() + 16, 10000)) {
    std::printf("error=the service did not resume after the failure\n");
    return 3;
  }
  std::printf("running_after_failure=yes\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  uvio::EalApp app = uvio::eal_init_or_exit(argc, argv, "  --to=ADDR --rate-mib=N --zone-mib=N ... (see source)\n");
  Options o;
  if (!parse(app.argc, app.argv, &o)) return 2;
  uvio::Runtime& rt = *app.runtime;
  int rc = rt.config().migrate_listen.empty() ? run_source(rt, o) : run_destination(rt, o);
  std::fflush(stdout);
  return rc;
}
