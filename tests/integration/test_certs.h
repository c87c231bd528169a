// Certificates made at test time with Debian's openssl (EC P-256 keys: fast to make), in a
// temporary directory removed by the destructor:
//   ca.pem / ca.key               a CA
//   server.pem / server.key       for 127.0.0.1 and localhost, signed by ca
//   client, team-a, team-b        client certificates (CN = their name) signed by ca
//   expired                       a client certificate of ca that expired yesterday
//   stranger                      a client certificate of an unrelated CA (other_ca)
// NewServerCertificate re-issues server.* from a fresh CA (rotation tests).
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/store/checkpoint_io.h"

namespace qtrain {

class Certificates {
 public:
  Certificates() {
    char dir[] = "/tmp/qtrain_tls_XXXXXX";
    dir_ = mkdtemp(dir);
    std::ofstream(Path("san.ext")) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    for (const char* ca : {"ca", "other_ca"}) MakeCa(ca);
    Sign("server", "ca", "-days 1 -extfile san.ext");
    for (const char* client : {"client", "team-a", "team-b"}) Sign(client, "ca", "-days 1");
    Sign("expired", "ca", "-days -1");
    Sign("stranger", "other_ca", "-days 1");
  }
  ~Certificates() { (void)std::system(("rm -rf " + dir_).c_str()); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Pem(const std::string& name) const {
    absl::StatusOr<std::string> pem = store::ReadWholeFile(Path(name), 1 << 20);
    EXPECT_TRUE(pem.ok()) << pem.status();
    return pem.ok() ? *pem : "";
  }

  // Client credentials trusting `ca`, presenting the certificate `client` (none when empty).
  std::shared_ptr<grpc::ChannelCredentials> Client(const std::string& client = "",
                                                   const std::string& ca = "ca") const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Pem(ca + ".pem");
    if (!client.empty()) {
      o.pem_private_key = Pem(client + ".key");
      o.pem_cert_chain = Pem(client + ".pem");
    }
    return grpc::SslCredentials(o);
  }

  // Replaces server.pem / server.key (atomically, as a deployment would) with a certificate
  // of the new CA `ca`.
  void NewServerCertificate(const std::string& ca) {
    MakeCa(ca);
    Sign("server_next", ca, "-days 1 -extfile san.ext");
    Run("mv server_next.key server.key && mv server_next.pem server.pem");
  }

 private:
  void Run(const std::string& command) {
    const std::string line = absl::StrCat("cd ", dir_, " && ", command, " > /dev/null 2>&1");
    ASSERT_EQ(std::system(line.c_str()), 0) << line;
  }
  void MakeCa(const std::string& ca) {
    Run(
        absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                     "-keyout ",
                     ca, ".key -out ", ca, ".pem -days 1 -subj /CN=", ca));
  }
  void Sign(const std::string& name, const std::string& ca, const std::string& extra) {
    Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ",
                     name, ".key -out ", name, ".csr -subj /CN=", name));
    Run(absl::StrCat("openssl x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ", ca,
                     ".key -CAcreateserial -out ", name, ".pem ", extra));
  }
  std::string dir_;
};

}  // namespace qtrain
