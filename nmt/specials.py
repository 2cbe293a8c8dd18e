"""Fixed ids of the special tokens, the same in every SentencePiece model we train.

Models, batching and search rely on these numbers, so they never change.
"""

PAD_ID = 0  # padding; never predicted, ignored by the loss
UNK_ID = 1  # unknown piece
BOS_ID = 2  # first decoder input
EOS_ID = 3  # end of sentence: appended to every source and target
