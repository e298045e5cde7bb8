"""vaestudy: what p(x|z) should a VAE decoder be?"""
