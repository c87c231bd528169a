// ServerProcess: a qtrain-server child process for the tests that run the binary as users do
// (server_process_test, data_parallel_process_test). Its port comes from its log.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"

namespace qtrain {

constexpr char kServer[] = "build/bin/qtrain-server";  // tests run from the project root

// A child qtrain-server; its port comes from the "listening on port N" line.
class ServerProcess {
 public:
  // `log_suffix` tells apart the logs of several servers sharing a directory.
  explicit ServerProcess(const std::string& data_dir,
                         std::vector<std::string> flags = {"--autosave_steps=5"},
                         const std::string& log_suffix = "") {
    const std::string log = data_dir + "/server" + log_suffix + ".log";
    log_ = log;
    flags.insert(flags.begin(), {kServer, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                 "--data_dir=" + data_dir});
    std::vector<char*> argv;
    for (std::string& f : flags) argv.push_back(f.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      execv(kServer, argv.data());
      _exit(127);
    }
    // Wait (bounded) for the "listening on port N" and "metrics on ...:M" lines.
    for (int attempt = 0; attempt < 400 && (port_ == 0 || metrics_port_ == 0); ++attempt) {
      usleep(50 * 1000);
      FILE* f = fopen(log.c_str(), "r");
      if (f == nullptr) continue;
      char line[256];
      while (fgets(line, sizeof(line), f) != nullptr) {
        std::sscanf(line, "qtrain-server listening on port %d", &port_);
        std::sscanf(line, "qtrain-server metrics on http://127.0.0.1:%d", &metrics_port_);
        // --log_format=json: {"event":"listening",...,"port":"N"}
        const std::string l = line;
        const size_t at = l.find("\"port\":\"");
        if (at != std::string::npos && l.find("\"event\":\"listening\"") != std::string::npos) {
          port_ = std::atoi(l.c_str() + at + 8);
        }
        if (at != std::string::npos && l.find("\"event\":\"metrics\"") != std::string::npos) {
          metrics_port_ = std::atoi(l.c_str() + at + 8);
        }
      }
      fclose(f);
    }
    EXPECT_GT(port_, 0) << "qtrain-server did not start; see " << log;
  }
  ~ServerProcess() { Kill(SIGKILL); }

  int Kill(int signal) {
    Signal(signal);
    return Wait();
  }
  void Signal(int signal) {
    if (pid_ > 0) kill(pid_, signal);
  }
  // The exit status (waitpid's), once the process ends.
  int Wait() {
    if (pid_ <= 0) return -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  int port() const { return port_; }
  std::unique_ptr<v1::Trainer::Stub> Stub() { return v1::Trainer::NewStub(Channel()); }
  std::shared_ptr<grpc::Channel> Channel() {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                               grpc::InsecureChannelCredentials());
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;

 public:
  std::string log_;  // the server's output file

 public:
  int metrics_port_ = 0;
};

// The text of http://127.0.0.1:PORT/metrics ("" when it cannot be read).
inline std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

}  // namespace qtrain
