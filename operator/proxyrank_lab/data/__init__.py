"""Data tools: tokenize text into the shard format, train a BPE tokenizer, build the demo recipes."""
