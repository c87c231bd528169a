// The client's data loaders (IDX, CSV, text) and the batch iterator, on small files written here.
#include "client/data/dataset.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace qtrain::client {
namespace {

namespace fs = std::filesystem;

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qtrain_dataset_test_" +
            std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes, bool gzip = false) {
    const std::string path = (dir_ / name).string();
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary) << bytes;
    }
    return path;
  }

  // An IDX file of unsigned bytes: magic 0x0000 08 <rank>, big-endian dims, data = i % 251.
  static std::string Idx(const std::vector<uint32_t>& dims) {
    std::string s = {0, 0, 8, static_cast<char>(dims.size())};
    size_t n = 1;
    for (uint32_t d : dims) {
      for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>(d >> shift));
      n *= d;
    }
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(i % 251));
    return s;
  }

  fs::path dir_;
};

TEST_F(DatasetTest, IdxDirectoryWithGzipAndPlainFiles) {
  Write("train-images-idx3-ubyte.gz", Idx({5, 4, 3}), /*gzip=*/true);
  Write("train-labels-idx1-ubyte", Idx({5}));
  DataOptions o;
  o.path = dir_.string();
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 5);
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{4, 3, 1}));
  // Pixels stay bytes and travel as U8 with their scale (a quarter of F32's bytes).
  EXPECT_EQ(d->pixels[13], 13);
  EXPECT_EQ(d->FloatInputs()[13], 13 * (1 / 255.0f));
  EXPECT_EQ(d->labels, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  v1::Tensor wire;
  d->FillInputs({1, 3}, &wire);
  EXPECT_EQ(wire.dtype(), v1::Tensor::U8);
  EXPECT_EQ(wire.data().size(), 2u * 12u);
  EXPECT_EQ(static_cast<uint8_t>(wire.data()[12]), 36);  // example 3, element 0
  ASSERT_EQ(wire.scale_size(), 1);
  EXPECT_EQ(wire.scale(0), 1 / 255.0f);

  o.split = "t10k";
  EXPECT_EQ(LoadDataset(o).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetTest, IdxImagesFileFindsItsLabelsAndHonoursLimit) {
  const std::string images = Write("x-images-idx3-ubyte", Idx({6, 2, 2}));
  Write("x-labels-idx1-ubyte", Idx({6}));
  DataOptions o;
  o.path = images;
  o.limit = 4;
  o.input_scale = 1;
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 4);
  EXPECT_EQ(d->labels.size(), 4u);
  EXPECT_EQ(d->FloatInputs()[15], 15.0f);
  v1::Tensor wire;
  d->FillInputs({0}, &wire);
  EXPECT_EQ(wire.scale_size(), 0);  // --input_scale=1: the bytes as they are
}

TEST_F(DatasetTest, IdxRejectsBadFiles) {
  std::string truncated = Idx({3, 2, 2});
  truncated.pop_back();
  auto r = ReadIdx(Write("a-images-idx3-ubyte", truncated));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("header says 12"), std::string::npos) << r.status();
  EXPECT_EQ(ReadIdx(Write("b", "not idx")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadIdx((dir_ / "missing").string()).status().code(), absl::StatusCode::kNotFound);
  // Labels that disagree with the images in count.
  const std::string images = Write("c-images-idx3-ubyte", Idx({3, 2, 2}));
  Write("c-labels-idx1-ubyte", Idx({2}));
  DataOptions o;
  o.path = images;
  EXPECT_EQ(LoadDataset(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, CsvLabelColumnByHeaderNameIndexOrLast) {
  const std::string with_header = Write("h.csv", "a,label,b\n1,2,3\n4,5,6\n");
  DataOptions o;
  o.path = with_header;
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, (std::vector<int32_t>{2, 5}));
  EXPECT_EQ(d->features, (std::vector<float>{1, 3, 4, 6}));

  o.limit = 1;  // rows, not values
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 1);
  EXPECT_EQ(d->labels, (std::vector<int32_t>{2}));
  o.limit = 0;

  o.path = Write("n.csv.gz", "1,2,3\n4,5,6\n", /*gzip=*/true);
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, (std::vector<int32_t>{3, 6}));  // no header: the last column

  o.label_column = "0";
  o.input_shape = {2, 1};
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, (std::vector<int32_t>{1, 4}));
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{2, 1}));

  o.label_column = "none";
  o.input_shape = {};
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->labels.empty());
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{3}));
}

TEST_F(DatasetTest, CsvErrorsNameTheLineAndValue) {
  DataOptions o;
  o.path = Write("bad.csv", "1,2,3\n4,x,6\n");
  auto d = LoadDataset(o);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("line 2 column 2: \"x\""), std::string::npos) << d.status();

  o.path = Write("ragged.csv", "1,2,3\n4,5\n");
  EXPECT_NE(LoadDataset(o).status().message().find("2 columns, expected 3"), std::string::npos);

  o.path = Write("label.csv", "1,2,3.5\n");
  o.targets = "class";
  EXPECT_NE(LoadDataset(o).status().message().find("not a class index"), std::string::npos);
  o.targets = "sideways";
  EXPECT_NE(LoadDataset(o).status().message().find("--targets=sideways"), std::string::npos);
  o.targets = "";

  o.path = Write("ok.csv", "1,2,3\n");
  o.input_shape = {3};
  EXPECT_NE(LoadDataset(o).status().message().find("--input_shape=3 has 3 elements"),
            std::string::npos);
  o.input_shape = {};
  o.label_column = "nope";
  EXPECT_EQ(LoadDataset(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, TruncatedGzipIsDataLoss) {
  const std::string path = Write("t.txt.gz", std::string(5000, 'x'), /*gzip=*/true);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  Write("cut.txt.gz", bytes.substr(0, bytes.size() - 6));
  EXPECT_EQ(ReadMaybeGzip((dir_ / "cut.txt.gz").string()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ReadMaybeGzip(path).ok());
}

TEST_F(DatasetTest, FormatComesFromTheFileName) {
  fs::create_directories(dir_ / "kidx");
  DataOptions o;
  o.path = Write("kidx/iris.csv", "1,2,0\n");  // "idx" in a directory name is not IDX
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, (std::vector<int32_t>{0}));
  o.path = Write("notes_idx.txt", "hello world, hello");
  o.seq_len = 4;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->tokens);
}

// Kaggle's MNIST names (t10k-images.idx3-ubyte) and any other name: IDX by its magic bytes,
// gzipped or not, with the labels file derived from the name.
TEST_F(DatasetTest, IdxIsRecognisedByItsMagicBytes) {
  Write("t10k-images.idx3-ubyte", Idx({4, 2, 2}));
  Write("t10k-labels.idx1-ubyte", Idx({4}));
  DataOptions o;
  o.path = (dir_ / "t10k-images.idx3-ubyte").string();
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->tokens);
  EXPECT_EQ(d->size(), 4);
  EXPECT_EQ(d->labels.size(), 4u);
  o.path = Write("pictures.bin.gz", Idx({3, 2, 2}), /*gzip=*/true);
  o.labels_path = Write("answers.bin", Idx({3}));
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 3);
}

// A label column with values that are not class indices holds regression targets: F32 (N, 1).
TEST_F(DatasetTest, CsvFloatTargetsForRegression) {
  DataOptions o;
  o.path = Write("reg.csv", "x,y,target\n1,2,0.5\n3,4,-1.25\n5,6,2\n");
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->labels.empty());
  EXPECT_EQ(d->float_targets, (std::vector<float>{0.5f, -1.25f, 2.0f}));
  EXPECT_NE(d->description.find("float targets: column 2"), std::string::npos) << d->description;
  v1::Batch b;
  BatchIterator it(*d, 2, 1, /*shuffle=*/false, 0);
  ASSERT_TRUE(it.NextBatch(&b));
  EXPECT_EQ(b.targets().dtype(), v1::Tensor::F32);
  EXPECT_EQ(std::vector<int64_t>(b.targets().shape().begin(), b.targets().shape().end()),
            (std::vector<int64_t>{2, 1}));
  float t[2];
  std::memcpy(t, b.targets().data().data(), sizeof t);
  EXPECT_EQ(t[1], -1.25f);
  // Whole numbers are class indices unless --targets=float says otherwise.
  o.path = Write("ints.csv", "1,2,3\n4,5,6\n");
  o.targets = "float";
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->float_targets, (std::vector<float>{3, 6}));
}

TEST_F(DatasetTest, TextIsBytesInWindowsWithNextByteTargets) {
  DataOptions o;
  o.path = Write("t.txt", "abcdefghij");
  o.seq_len = 3;
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 3);  // (10 - 1) / 3 windows
  EXPECT_TRUE(d->tokens);
  EXPECT_EQ(d->token_ids[3], 'd');
  EXPECT_EQ(d->labels[3], 'e');
  EXPECT_EQ(d->labels[8], 'j');
  v1::Batch b;
  BatchIterator it(*d, 2, 1, false, 0);
  ASSERT_TRUE(it.NextBatch(&b));
  EXPECT_EQ(b.inputs().dtype(), v1::Tensor::I32);
  EXPECT_EQ(b.inputs().shape_size(), 2);
  EXPECT_EQ(b.targets().shape(1), 3);
  EXPECT_EQ(b.targets().data().size(), 2 * 3 * sizeof(int32_t));

  o.seq_len = 10;
  EXPECT_EQ(LoadDataset(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// A .npy file as numpy.save writes it: magic, version 1.0, a padded header dict, the data.
std::string Npy(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

TEST_F(DatasetTest, TokenIdFilesInWindowsWithNextOrOwnLabels) {
  DataOptions o;
  o.seq_len = 4;
  const std::vector<uint16_t> ids16 = {5, 6, 7, 8, 9, 10, 11, 12, 60000};
  o.path = Write("train.bin", Bytes(ids16));  // nanoGPT: raw uint16
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->format, "bin");
  ASSERT_EQ(d->size(), 2);  // (9 - 1) / 4 windows with next-id labels
  EXPECT_EQ(d->token_ids, (std::vector<int32_t>{5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(d->labels, (std::vector<int32_t>{6, 7, 8, 9, 10, 11, 12, 60000}));
  o.labels_are_inputs = true;  // a session whose loss shifts labels
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, d->token_ids);

  const std::vector<uint32_t> ids32 = {70000, 1, 2, 3};
  o.path = Write("big.bin", Bytes(ids32));
  o.token_dtype = "uint32";
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_ids[0], 70000);
  o.token_dtype = "int8";
  EXPECT_NE(LoadDataset(o).status().message().find("--token_dtype=int8"), std::string::npos);
  o.token_dtype = "";

  const std::vector<int64_t> ids64 = {3, 1, 4, 1, 5, 9, 2, 6};
  o.path = Write("ids.npy", Npy("<i8", "(8,)", Bytes(ids64)));
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->format, "npy");
  EXPECT_EQ(d->token_ids, (std::vector<int32_t>{3, 1, 4, 1, 5, 9, 2, 6}));
  const std::vector<int32_t> negative = {1, -2, 3, 4};
  o.path = Write("neg.npy", Npy("<i4", "(4,)", Bytes(negative)));
  EXPECT_NE(LoadDataset(o).status().message().find("token id -2 at index 1"), std::string::npos);
  o.path = Write("f.npy", Npy("<f4", "(4,)", Bytes(std::vector<float>(4))));
  EXPECT_NE(LoadDataset(o).status().message().find("'<f4' is not a little-endian integer"),
            std::string::npos);
  o.path = Write("2d.npy", Npy("<i4", "(2, 2)", Bytes(std::vector<int32_t>(4))));
  EXPECT_NE(LoadDataset(o).status().message().find("is not 1-D"), std::string::npos);
  o.path = Write("cut.npy", Npy("<i4", "(8,)", Bytes(std::vector<int32_t>(4))));
  EXPECT_NE(LoadDataset(o).status().message().find("the header says 32"), std::string::npos);
  o.tokenizer = "x.model";
  EXPECT_NE(LoadDataset(o).status().message().find("--tokenizer applies to text data only"),
            std::string::npos);
}

// Debian's spm_train and spm_encode (package sentencepiece) are the independent side: our loader
// goes through the qtrain-spm helper.
TEST_F(DatasetTest, TextThroughASentencePieceModel) {
  setenv("QTRAIN_SPM", QTRAIN_SPM_PATH, 1);
  std::string corpus_text;
  for (int i = 0; i < 200; ++i) {
    corpus_text += "the quick brown fox jumps over the lazy dog " + std::to_string(i % 7) + "\n";
  }
  const std::string corpus = Write("corpus.txt", corpus_text);
  const std::string prefix = (dir_ / "sp").string();
  ASSERT_EQ(std::system(("spm_train --input=" + corpus + " --model_prefix=" + prefix +
                         " --vocab_size=40 --model_type=bpe --minloglevel=2 2>/dev/null")
                            .c_str()),
            0)
      << "spm_train (Debian package sentencepiece) failed";
  // One line: spm_encode encodes line by line, the loader the whole text.
  std::string text;
  for (int i = 0; i < 100; ++i)
    text += "the lazy dog jumps over the quick brown fox " + std::to_string(i % 5) + " ";
  const std::string line = Write("line.txt", text);
  const std::string ids_file = (dir_ / "ids.txt").string();
  ASSERT_EQ(std::system(("spm_encode --model=" + prefix + ".model --output_format=id < " + line +
                         " > " + ids_file)
                            .c_str()),
            0);
  std::vector<int> want;
  std::ifstream in(ids_file);
  for (int id = 0; in >> id;) want.push_back(id);
  ASSERT_GT(want.size(), 100u);

  DataOptions o;
  o.path = line;
  o.tokenizer = prefix + ".model";
  o.seq_len = 16;
  o.labels_are_inputs = true;
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), static_cast<int64_t>(want.size()) / 16);
  for (size_t i = 0; i < d->token_ids.size(); ++i) ASSERT_EQ(d->token_ids[i], want[i]) << i;
  EXPECT_LT(d->token_ids.size(), text.size());  // pieces, not bytes
  o.path = Write("line.txt.gz", text, /*gzip=*/true);
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_ids[5], want[5]);
  // Line by line, as spm_encode: its output has one line of ids per input line.
  const std::string two = Write("two.txt", "the lazy dog\n\nover the quick brown fox 3\n");
  ASSERT_EQ(std::system(("spm_encode --model=" + prefix + ".model --output_format=id < " + two +
                         " > " + ids_file)
                            .c_str()),
            0);
  std::vector<std::vector<int32_t>> want_lines;
  std::ifstream lines_in(ids_file);
  for (std::string row; std::getline(lines_in, row);) {
    std::istringstream ids(row);
    want_lines.emplace_back();
    for (int id = 0; ids >> id;) want_lines.back().push_back(id);
  }
  ASSERT_EQ(want_lines.size(), 3u);
  ASSERT_TRUE(want_lines[1].empty());
  o.path = two;
  o.sequences = "lines";
  o.pad_id = 0;
  o.seq_len = 32;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 2);
  for (int e = 0; e < 2; ++e) {
    const std::vector<int32_t>& w = want_lines[e == 0 ? 0 : 2];
    ASSERT_LE(w.size(), 32u);
    for (size_t t = 0; t < 32; ++t) {
      EXPECT_EQ(d->token_ids[e * 32 + t], t < w.size() ? w[t] : 0) << e << " " << t;
    }
  }
  o.sequences = "";
  o.tokenizer = corpus;  // not a model
  EXPECT_NE(LoadDataset(o).status().message().find("is not a SentencePiece model"),
            std::string::npos);
  setenv("QTRAIN_SPM", (dir_ / "no-such-helper").c_str(), 1);
  o.tokenizer = prefix + ".model";
  EXPECT_NE(LoadDataset(o).status().message().find("set QTRAIN_SPM"), std::string::npos);
  unsetenv("QTRAIN_SPM");
}

TEST_F(DatasetTest, TextLinesArePaddedSequences) {
  DataOptions o;
  o.path = Write("lines.txt", "ab\n\nabcdef\r\n  \nx");
  o.sequences = "lines";
  o.seq_len = 4;
  EXPECT_NE(LoadDataset(o).status().message().find("needs a pad id"), std::string::npos);
  o.pad_id = 0;
  auto d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  // Lines "ab", "abcdef" (CR dropped, cut at 4), "  " and "x"; the empty line is skipped.
  ASSERT_EQ(d->size(), 4);
  EXPECT_EQ(d->token_ids, (std::vector<int32_t>{'a', 'b', 0, 0, 'a', 'b', 'c', 'd', ' ', ' ', 0, 0,
                                                'x', 0, 0, 0}));
  // Next-id labels: pad after a line's end; a cut line's last label is the id after the cut.
  EXPECT_EQ(d->labels,
            (std::vector<int32_t>{'b', 0, 0, 0, 'b', 'c', 'd', 'e', ' ', 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_NE(d->description.find("1 lines cut at --seq_len"), std::string::npos) << d->description;
  o.labels_are_inputs = true;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, d->token_ids);
  o.limit = 1;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size(), 1);

  o.path = Write("blank.txt", "\n \n\n");
  o.limit = 0;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();  // " " is a line of one byte
  o.path = Write("empty.txt", "\n\n");
  EXPECT_NE(LoadDataset(o).status().message().find("has no sequence"), std::string::npos);
  o.path = Write("ids.npy", Npy("<i4", "(4,)", Bytes(std::vector<int32_t>{1, 2, 3, 4})));
  EXPECT_NE(LoadDataset(o).status().message().find("--sequences=lines applies to text data only"),
            std::string::npos);
  o.sequences = "paragraphs";
  EXPECT_NE(LoadDataset(o).status().message().find("--sequences=paragraphs is not one of"),
            std::string::npos);
}

TEST_F(DatasetTest, BatchIteratorCoversEveryRowOncePerEpoch) {
  Dataset d;
  d.example_shape = {2};
  for (int i = 0; i < 10; ++i) {
    d.features.insert(d.features.end(), {float(i), float(-i)});
    d.labels.push_back(i);
  }
  BatchIterator it(d, 4, 2, /*shuffle=*/true, 7);
  EXPECT_EQ(it.total_batches(), 6);  // 4 + 4 + 2 per epoch
  std::multiset<int64_t> seen;
  std::vector<int64_t> rows;
  std::vector<size_t> sizes;
  while (it.Next(&rows)) {
    seen.insert(rows.begin(), rows.end());
    sizes.push_back(rows.size());
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{4, 4, 2, 4, 4, 2}));
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(seen.count(i), 2u) << i;

  BatchIterator huge(d, int64_t{1} << 62, 1, false, 0);  // clamped to the data: one batch
  EXPECT_EQ(huge.total_batches(), 1);

  BatchIterator capped(d, 4, 5, false, 0, /*max_batches=*/3);
  v1::Batch b;
  int n = 0;
  while (capped.NextBatch(&b)) ++n;
  EXPECT_EQ(n, 3);
  float first = 0;
  std::memcpy(&first, b.inputs().data().data(), sizeof(float));
  EXPECT_EQ(first, 8.0f);  // the third batch of an unshuffled pass starts at row 8
  EXPECT_EQ(b.inputs().shape(0), 2);
}

}  // namespace
}  // namespace qtrain::client
