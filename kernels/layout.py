"""The compact plan the kernels interpret: layer records inside the float32 weight buffer.

The runtime packs a model into two read-only buffers and one buffer per stream:

* ``wf`` (float32): a header, one record of ``REC`` values per layer, float parameters, float32 weights,
  biases and int8 scales. Record fields are small integers stored exactly as float32; offsets, which can
  exceed 2**24, take two fields (``hi * 2**24 + lo``).
* ``wb`` (int8): int8 weights, and int32 data (CSR indices) at 4-byte aligned offsets.
* ``M`` (float32, one per stream): ``[state | work]``; the state part is what ``Stream.state`` copies.

All names here are module-level ints, which numba compiles as constants.
"""

# header of wf
H_NLAYERS = 0
H_NIN = 1
H_NOUT = 2
H_IN = 3  # 2 fields: offset of the input copy in M
H_OUT = 5  # 2 fields: offset of the model output in M
H_VOCAB = 7  # token vocabulary size, 0 for feature inputs
H_NSTATE = 8  # 2 fields
H_NM = 10  # 2 fields: length of M
H_SEQW = 12  # widest layer input/output (seq-mode buffer width)
H_SEQS = 13  # 2 fields: seq-mode scratch length (reverse-direction states)
H_FLAGS = 15  # bit 1: let non-finite inputs through
HEADER = 16
REC = 96

# layer kinds
K_NORMALIZE = 0
K_AFFINE = 1
K_ACTIVATION = 2
K_EMBEDDING = 3
K_ONEHOT = 4
K_RNN = 5
K_LSTM = 6
K_GRU = 7
K_ESN = 8
K_DENSE = 9
K_ATTENTION = 10
K_GATHER = 11
K_CONV = 12
K_BINARY = 13
K_UNARY = 14
K_LAYERNORM = 15
K_TCONV = 16
K_FINAL = 17
K_STATE = 18
K_MATMUL = 19
K_WHERE = 20
KIND_CODES = {
    "normalize": K_NORMALIZE,
    "affine": K_AFFINE,
    "activation": K_ACTIVATION,
    "embedding": K_EMBEDDING,
    "onehot": K_ONEHOT,
    "rnn": K_RNN,
    "lstm": K_LSTM,
    "gru": K_GRU,
    "esn": K_ESN,
    "dense": K_DENSE,
    "attention": K_ATTENTION,
    "gather": K_GATHER,
    "conv1d": K_CONV,
    "binary": K_BINARY,
    "unary": K_UNARY,
    "layernorm": K_LAYERNORM,
    "tconv": K_TCONV,
    "final": K_FINAL,
    "state": K_STATE,
    "matmul": K_MATMUL,
    "where": K_WHERE,
}

# record fields (offsets within a record)
R_KIND = 0
R_NIN = 1
R_NOUT = 2
R_IN = 3  # 2: input offset in M
R_OUT = 5  # 2: output offset in M
R_H = 7  # hidden / reservoir / attention size
R_D = 8  # directions
R_ST = 9  # 2: state offset in M
R_SCR = 11  # 2: scratch offset in M
R_FP = 13  # 2: float params in wf: [alpha x6, beta x6, clip, leak_rate]
R_FLAGS = 15  # bit flags, see F_*
R_ACT = 16  # 6 activation codes: 3 per direction
R_MAT = 24  # 6 matrix descriptors of MAT fields each
MAT = 8
R_VEC = 72  # 12 vector offsets (into wf, or into wb's int32 view for CSR), 2 fields each
# the graph ops (gather, conv1d, binary, unary) use the last two vector slots, which no other kind uses:
R_AUX = R_VEC + 20  # 2: offset in wf of the op's integer parameters (small ints stored as float32)
R_IN2 = R_VEC + 22  # 2: offset in M of a second input value (binary ops)
# matrix descriptor fields: a rows x cols block, row r starting at off + r*ld
M_Q = 0  # 0: float32 in wf; 1: int8 in wb with float32 per-row scales in wf
M_OFF = 1  # 2 fields
M_ROWS = 3
M_COLS = 4
M_LD = 5
M_SOFF = 6  # 2 fields
# flags
F_CLIP = 1
F_LBR = 2  # gru linear_before_reset
F_INPUT_FORGET = 4  # lstm
F_PEEPHOLE = 8  # lstm
F_EXTENDED = 16  # esn readout on [1; u; x]
F_SPARSE = 32  # esn CSR reservoir
F_BIAS = 64  # dense/esn: has bias
F_FUSED = 128  # rnn/lstm/gru: matrix 2d is [W | R] over [x; h]
F_REVERSE = 256  # rnn/lstm/gru: direction 'reverse'
F_CELL = 1024  # lstm: the output is [h; c] per step (D·H hidden units, then D·H cell units: ONNX Y; Y_c)
F_HNEXT = 2048  # rnn/lstm/gru: h takes the value at R_IN2 at the end of each step (attr h_next)
F_CNEXT = 4096  # lstm: c takes the value at R_AUX at the end of each step (attr c_next)
F_SELL = 8192  # esn, with F_SPARSE: the reservoir is SELL-8 (kernels/sparse.py), not CSR
F_XT = 512  # one-direction rnn/lstm/gru (float32, or int8 of <= 16 inputs), esn: XT is W_inputᵀ (I, G·H)
#: the descriptor of the transposed input weights (F_XT): the generated step's x part is an axpy per input
#: column over all gate rows (row-major dot products over I = 8 columns cost a horizontal sum per row)
XT = 5

# float parameter slots (relative to R_FP offset)
P_ALPHA = 0
P_BETA = 6
P_CLIP = 12
P_LEAK = 13
NP = 14

TWO24 = 16777216

# status codes of every kernel entry point (in batch mode ``code | row << 3``); inputs are checked before
# any state is touched, so a refused call leaves every stream as it was
ST_OK = 0
ST_SIZE = 1
ST_NONFINITE = 2
ST_TOKEN = 3
ST_OVERFLOW = 4  # a finite input drove the state or output to NaN/Inf; the state was restored
ST_NOT_STREAMABLE = 5
