#include "server/rpc/reflection_v1.h"

#include <algorithm>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include "absl/strings/str_cat.h"

namespace qtrain::rpc {
namespace {

namespace v1 = grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// `file` and, depth first, the files it imports that `sent` does not hold yet.
void AddFile(const FileDescriptor* file, std::vector<std::string>& sent,
             v1::FileDescriptorResponse* out) {
  if (std::find(sent.begin(), sent.end(), file->name()) != sent.end()) return;
  sent.push_back(file->name());
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  out->add_file_descriptor_proto(proto.SerializeAsString());
  for (int i = 0; i < file->dependency_count(); ++i) AddFile(file->dependency(i), sent, out);
}

void SetError(v1::ServerReflectionResponse& r, grpc::StatusCode code, std::string message) {
  r.mutable_error_response()->set_error_code(static_cast<int>(code));
  r.mutable_error_response()->set_error_message(std::move(message));
}

// Reads a request, writes its answer, reads the next: one message in flight each way.
class Stream final
    : public grpc::ServerBidiReactor<v1::ServerReflectionRequest, v1::ServerReflectionResponse> {
 public:
  explicit Stream(const ReflectionV1* service) : service_(service) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    response_ = service_->Answer(request_);
    StartWrite(&response_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading"));
      return;
    }
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  const ReflectionV1* service_;
  v1::ServerReflectionRequest request_;
  v1::ServerReflectionResponse response_;
};

}  // namespace

grpc::ServerBidiReactor<v1::ServerReflectionRequest, v1::ServerReflectionResponse>*
ReflectionV1::ServerReflectionInfo(grpc::CallbackServerContext*) {
  return new Stream(this);
}

v1::ServerReflectionResponse ReflectionV1::Answer(
    const v1::ServerReflectionRequest& request) const {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  v1::ServerReflectionResponse r;
  r.set_valid_host(request.host());
  *r.mutable_original_request() = request;
  const FileDescriptor* file = nullptr;
  std::string missing;
  switch (request.message_request_case()) {
    case v1::ServerReflectionRequest::kListServices:
      for (const std::string& name : services_) {
        r.mutable_list_services_response()->add_service()->set_name(name);
      }
      return r;
    case v1::ServerReflectionRequest::kFileByFilename:
      file = pool->FindFileByName(request.file_by_filename());
      missing = absl::StrCat("file \"", request.file_by_filename(), "\"");
      break;
    case v1::ServerReflectionRequest::kFileContainingSymbol:
      file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      missing = absl::StrCat("symbol \"", request.file_containing_symbol(), "\"");
      break;
    case v1::ServerReflectionRequest::kFileContainingExtension: {
      const auto& e = request.file_containing_extension();
      const auto* type = pool->FindMessageTypeByName(e.containing_type());
      const auto* ext = type ? pool->FindExtensionByNumber(type, e.extension_number()) : nullptr;
      if (ext != nullptr) file = ext->file();
      missing =
          absl::StrCat("extension ", e.extension_number(), " of \"", e.containing_type(), "\"");
      break;
    }
    case v1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(r, grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("type \"", request.all_extension_numbers_of_type(), "\" not found"));
        return r;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* numbers = r.mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const auto* f : extensions) numbers->add_extension_number(f->number());
      return r;
    }
    case v1::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      SetError(r, grpc::StatusCode::INVALID_ARGUMENT, "the request sets no message_request");
      return r;
  }
  if (file == nullptr) {
    SetError(r, grpc::StatusCode::NOT_FOUND, absl::StrCat(missing, " not found"));
    return r;
  }
  std::vector<std::string> sent;
  AddFile(file, sent, r.mutable_file_descriptor_response());
  return r;
}

}  // namespace qtrain::rpc
