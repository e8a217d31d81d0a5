"""The .qnn model file format: container, bit packing and (later) the model schema."""
