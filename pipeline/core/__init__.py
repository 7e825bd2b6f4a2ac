"""The code every family's training and evaluation runs through. Each train and evaluate stage depends
on the files of it that its process imports (pipeline/codedeps.py), not on the folder as a whole."""
