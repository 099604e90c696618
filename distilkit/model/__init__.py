"""The network and what knows its shape.

Config, layers, checkpoints both ways, tokenizer, model names, student building, layer maps,
int8 blocks and the BiLSTM student.
"""
