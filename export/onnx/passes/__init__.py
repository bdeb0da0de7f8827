"""Graph passes of the ONNX compiler: attention-pooling fusion (before evaluation), input classification
and state-wiring checks (state pairs), and the layer-fusion rules applied while the chain is built."""
