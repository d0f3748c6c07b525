"""Problems, solutions, steps and answers: the embedded arithmetic task and loaders for real formats."""
