"""The network: layouts beyond the BERT block that modeling.py holds."""
