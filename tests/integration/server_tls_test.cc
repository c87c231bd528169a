// The real server over TLS and mutual TLS, with certificates made at test time by Debian's
// openssl: a TLS client that trusts the CA is served, a plaintext client is not; with a client
// CA, only clients presenting a certificate it signed are served.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/server_main.h"
#include "server/store/checkpoint_io.h"
#include "tests/integration/test_certs.h"

namespace qtrain {
namespace {

class ServerTlsTest : public ::testing::Test {
 protected:
  std::unique_ptr<server::RunningServer> Start(bool mutual, int reload_seconds = 60) {
    server::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.tls_cert = certs_.Path("server.pem");
    o.tls_key = certs_.Path("server.key");
    o.tls_reload_seconds = reload_seconds;
    if (mutual) o.tls_client_ca = certs_.Path("ca.pem");
    auto s = server::RunningServer::Start(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // GetServerInfo through `credentials`: the status.
  grpc::Status Call(int port, std::shared_ptr<grpc::ChannelCredentials> credentials) {
    // A connection of its own (not one of gRPC's shared subchannels): each call handshakes.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto stub = v1::Trainer::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), std::move(credentials), args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ServerInfo info;
    return stub->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info);
  }

  std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& client = "") {
    return certs_.Client(client);
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
  EXPECT_FALSE(Call(server->port(), Tls("expired")).ok());   // expired yesterday
  server->Shutdown();
}

TEST_F(ServerTlsTest, RotatedCertificatesServeNewConnectionsWithoutARestart) {
  auto server = Start(/*mutual=*/false, /*reload_seconds=*/1);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(Call(server->port(), Tls()).ok());
  certs_.NewServerCertificate("next_ca");
  // Within a few reload periods new connections get the new certificate: a client trusting only
  // the new CA is served, one trusting only the old CA no longer is.
  bool rotated = false;
  for (int i = 0; i < 50 && !rotated; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    rotated = Call(server->port(), certs_.Client("", "next_ca")).ok() &&
              !Call(server->port(), Tls()).ok();
  }
  EXPECT_TRUE(rotated);
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
