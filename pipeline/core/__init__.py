"""The code every family's training and evaluation runs through: the train and evaluate stages depend
on this folder as one DVC dependency."""
