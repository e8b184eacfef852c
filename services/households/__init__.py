"""The file cards of households (建档立卡): members, status history, incomes, paired cadres."""
