
B	fc2.out_qJ(fR3iYmaT·¡%ÿ2@IPOXs3Ûwfu~–åk@lNndvw