// The real server over TLS and mutual TLS, with certificates made at test time by Debian's
// openssl: a TLS client that trusts the CA is served, a plaintext client is not; with a client
// CA, only clients presenting a certificate it signed are served.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/server_main.h"
#include "server/store/checkpoint_io.h"

namespace qtrain {
namespace {

// A CA, a server certificate for 127.0.0.1 and a client certificate, plus a client certificate
// from an unrelated CA; EC P-256 keys (fast to make), valid for one day.
class Certificates {
 public:
  Certificates() {
    char dir[] = "/tmp/qtrain_tls_XXXXXX";
    dir_ = mkdtemp(dir);
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::ofstream(Path("san.ext")) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    for (const char* ca : {"ca", "other_ca"}) {
      Run(absl::StrCat("openssl req -x509 ", ec, " -keyout ", ca, ".key -out ", ca,
                       ".pem -days 1 -subj /CN=", ca));
    }
    Sign("server", "ca", "-extfile san.ext");
    Sign("client", "ca", "");
    Sign("stranger", "other_ca", "");
  }
  ~Certificates() { (void)std::system(("rm -rf " + dir_).c_str()); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Pem(const std::string& name) const {
    absl::StatusOr<std::string> pem = store::ReadWholeFile(Path(name), 1 << 20);
    EXPECT_TRUE(pem.ok()) << pem.status();
    return pem.ok() ? *pem : "";
  }

 private:
  void Run(const std::string& command) {
    const std::string line = absl::StrCat("cd ", dir_, " && ", command, " > /dev/null 2>&1");
    ASSERT_EQ(std::system(line.c_str()), 0) << line;
  }
  void Sign(const std::string& name, const std::string& ca, const std::string& extra) {
    Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ",
                     name, ".key -out ", name, ".csr -subj /CN=", name));
    Run(absl::StrCat("openssl x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ", ca,
                     ".key -CAcreateserial -days 1 -out ", name, ".pem ", extra));
  }
  std::string dir_;
};

class ServerTlsTest : public ::testing::Test {
 protected:
  std::unique_ptr<server::RunningServer> Start(bool mutual) {
    server::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.tls_cert = certs_.Path("server.pem");
    o.tls_key = certs_.Path("server.key");
    if (mutual) o.tls_client_ca = certs_.Path("ca.pem");
    auto s = server::RunningServer::Start(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // GetServerInfo through `credentials`: the status.
  grpc::Status Call(int port, std::shared_ptr<grpc::ChannelCredentials> credentials) {
    auto stub = v1::Trainer::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), std::move(credentials)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ServerInfo info;
    return stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info);
  }

  std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& client = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = certs_.Pem("ca.pem");
    if (!client.empty()) {
      o.pem_private_key = certs_.Pem(client + ".key");
      o.pem_cert_chain = certs_.Pem(client + ".pem");
    }
    return grpc::SslCredentials(o);
  }

  Certificates certs_;
};

TEST_F(ServerTlsTest, TlsServesTrustingClientsAndRefusesPlaintext) {
  auto server = Start(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  const grpc::Status tls = Call(server->port(), Tls());
  EXPECT_TRUE(tls.ok()) << tls.error_message();
  EXPECT_FALSE(Call(server->port(), grpc::InsecureChannelCredentials()).ok());
  // A client that does not trust the server's CA refuses it.
  grpc::SslCredentialsOptions wrong;
  wrong.pem_root_certs = certs_.Pem("other_ca.pem");
  EXPECT_FALSE(Call(server->port(), grpc::SslCredentials(wrong)).ok());
  server->Shutdown();
}

TEST_F(ServerTlsTest, MutualTlsServesOnlyClientsTheCaSigned) {
  auto server = Start(/*mutual=*/true);
  ASSERT_NE(server, nullptr);
  const grpc::Status good = Call(server->port(), Tls("client"));
  EXPECT_TRUE(good.ok()) << good.error_message();
  EXPECT_FALSE(Call(server->port(), Tls()).ok());            // no client certificate
  EXPECT_FALSE(Call(server->port(), Tls("stranger")).ok());  // signed by another CA
  server->Shutdown();
}

TEST_F(ServerTlsTest, BadTlsFilesFailTheStartNamingTheFlag) {
  server::ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_cert = certs_.Path("server.pem");
  auto s = server::RunningServer::Start(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), ::testing::HasSubstr("--tls_key"));
  o.tls_key = certs_.Path("missing.key");
  s = server::RunningServer::Start(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), ::testing::HasSubstr("--tls_key="));
}

}  // namespace
}  // namespace qtrain
