
Bfc.out_qJ(Sq3EUQ08ÂV@é†h"sbpD6eğPGQ@|İVkL;7?chk